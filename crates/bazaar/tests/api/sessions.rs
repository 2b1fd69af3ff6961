//! Sessions: short-lived access tokens, rotating refresh tokens, logout and password
//! change (issue 14 finding 4).

use serde_json::{Value, json};

use crate::helpers::{DataDir, TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

const REGISTER: &str = "/api/v1/auth/register";
const LOGIN: &str = "/api/v1/auth/login";
const REFRESH: &str = "/api/v1/auth/refresh";
const LOGOUT: &str = "/api/v1/auth/logout";
const ME: &str = "/api/v1/me";
const PASSWORD: &str = "/api/v1/me/password";

/// A session's answer: `(token, refresh_token, body)`.
async fn session(response: reqwest::Response, status: u16) -> (String, String, Value) {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    (
        body["token"].as_str().expect("token").to_owned(),
        body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        body,
    )
}

async fn register(app: &TestApp, email: &str) -> (String, String, Value) {
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": email, "password": "password123", "name": "Ada"}),
            None,
        )
        .await;
    session(response, 201).await
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post_json(LOGIN, &json!({"email": email, "password": password}), None)
        .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post_json(REFRESH, &json!({"refresh_token": refresh_token}), None)
        .await
}

/// Runs `sql` with `user_id` bound against identity's store, as an operator would.
async fn on_identity_store(data: &DataDir, sql: &str, user_id: &str) {
    let pool = if let Some(url) = data.database_url() {
        chassis::store::Store::open_postgres(url, "identity", 1)
            .await
            .unwrap()
            .pool()
            .clone()
    } else {
        sqlx::any::install_default_drivers();
        let path = data.path().join("identity.db");
        sqlx::AnyPool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap()
    };
    let done = sqlx::query(sql).bind(user_id).execute(&pool).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
    pool.close().await;
}

#[tokio::test]
async fn register_and_login_return_a_refresh_token_and_a_short_lived_token() {
    let app = spawn_app().await;
    let (token, refresh_token, body) = register(&app, "ada@example.com").await;
    assert_eq!(body["expires_in"], 900, "{body}");
    assert!(
        refresh_token.len() >= 43,
        "256 random bits: {refresh_token}"
    );
    assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    let (_, other_refresh, body) =
        session(login(&app, "ada@example.com", "password123").await, 200).await;
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_ne!(other_refresh, refresh_token);
}

#[tokio::test]
async fn a_refresh_rotates_and_the_used_token_is_dead() {
    let app = spawn_app_with(|c| c.token_ttl_secs = 120).await;
    let (_, first, _) = register(&app, "ada@example.com").await;
    let (token, second, body) = session(refresh(&app, &first).await, 200).await;
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_ne!(second, first);
    assert_eq!(app.get(ME, Some(&token)).await.status(), 200);
    // The new one works once; garbage and empty tokens never do.
    let (_, third, _) = session(refresh(&app, &second).await, 200).await;
    for bad in ["", "not-a-token", &"x".repeat(4096)] {
        assert_problem(refresh(&app, bad).await, 401).await;
    }
    // Missing and unknown fields are the usual 422 and 400.
    let problem = assert_problem(app.post_json(REFRESH, &json!({}), None).await, 422).await;
    assert_eq!(error_fields(&problem), vec!["refresh_token"]);
    assert_problem(
        app.post_json(REFRESH, &json!({"refresh_token": third, "x": 1}), None)
            .await,
        400,
    )
    .await;
    // The first, used already, is refused.
    assert_problem(refresh(&app, &first).await, 401).await;
}

#[tokio::test]
async fn reusing_a_used_refresh_token_revokes_its_whole_session() {
    let app = spawn_app().await;
    let (_, stolen, _) = register(&app, "ada@example.com").await;
    // Another session of the same account, which the reuse must not touch.
    let (_, other, _) = session(login(&app, "ada@example.com", "password123").await, 200).await;
    let (_, current, _) = session(refresh(&app, &stolen).await, 200).await;
    // The copy comes back: refused, and the session's newest token dies with it.
    assert_problem(refresh(&app, &stolen).await, 401).await;
    assert_problem(refresh(&app, &current).await, 401).await;
    session(refresh(&app, &other).await, 200).await;
}

#[tokio::test]
async fn logout_revokes_the_sessions_refresh_tokens_only() {
    let app = spawn_app().await;
    let (token, refresh_token, _) = register(&app, "ada@example.com").await;
    let (_, other, _) = session(login(&app, "ada@example.com", "password123").await, 200).await;
    assert_problem(app.post_json(LOGOUT, &json!({}), None).await, 401).await;
    let response = app.post_json(LOGOUT, &json!({}), Some(&token)).await;
    assert_eq!(response.status(), 204);
    assert_problem(refresh(&app, &refresh_token).await, 401).await;
    session(refresh(&app, &other).await, 200).await;
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_and_the_old_password_fails() {
    let app = spawn_app().await;
    let (token, mine, _) = register(&app, "ada@example.com").await;
    let (_, other, _) = session(login(&app, "ada@example.com", "password123").await, 200).await;

    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    assert_problem(
        app.put_json(PASSWORD, &change("password123", "new-password"), None)
            .await,
        401,
    )
    .await;
    assert_problem(
        app.put_json(
            PASSWORD,
            &change("wrong-password", "new-password"),
            Some(&token),
        )
        .await,
        403,
    )
    .await;
    let problem = assert_problem(
        app.put_json(PASSWORD, &change("password123", "short"), Some(&token))
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&problem), vec!["new_password"]);

    let response = app
        .put_json(
            PASSWORD,
            &change("password123", "new-password"),
            Some(&token),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_problem(login(&app, "ada@example.com", "password123").await, 401).await;
    session(login(&app, "ada@example.com", "new-password").await, 200).await;
    // Every other session is over; the one that changed it goes on.
    assert_problem(refresh(&app, &other).await, 401).await;
    session(refresh(&app, &mine).await, 200).await;
}

#[tokio::test]
async fn a_refresh_after_a_role_change_carries_the_new_role_and_a_deleted_user_cannot_refresh() {
    let app = spawn_app().await;
    let (token, refresh_token, body) = register(&app, "ada@example.com").await;
    let user_id = body["user"]["id"].as_str().unwrap().to_owned();
    let admin_only = "/api/v1/admin/analytics/sales";
    assert_eq!(app.get(admin_only, Some(&token)).await.status(), 403);

    on_identity_store(
        &app.data_dir,
        "UPDATE users SET role = 'admin' WHERE id = $1",
        &user_id,
    )
    .await;
    let (token, refresh_token, body) = session(refresh(&app, &refresh_token).await, 200).await;
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(app.get(admin_only, Some(&token)).await.status(), 200);

    on_identity_store(&app.data_dir, "DELETE FROM users WHERE id = $1", &user_id).await;
    assert_problem(refresh(&app, &refresh_token).await, 401).await;
}

#[tokio::test]
async fn concurrent_uses_of_one_refresh_token_rotate_it_once_and_end_the_session() {
    let app = spawn_app().await;
    let (_, token, _) = register(&app, "ada@example.com").await;
    let uses = (0..4).map(|_| {
        let api = app.api.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let response = api
                .post_json(REFRESH, &json!({"refresh_token": token}), None)
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    });
    let mut winners = Vec::new();
    for answer in futures::future::join_all(uses).await {
        let (status, body) = answer.unwrap();
        match status {
            200 => winners.push(body["refresh_token"].as_str().unwrap().to_owned()),
            401 => {}
            other => panic!("a concurrent refresh answered {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one use rotates the token");
    // The others were reuses: the session is over, the winner's new token included.
    assert_problem(refresh(&app, &winners[0]).await, 401).await;
}
