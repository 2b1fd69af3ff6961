//! identity: register, login, me, and every way a token can be wrong.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, error_fields, spawn_app, statuses, tally};

const REGISTER: &str = "/api/v1/auth/register";
const LOGIN: &str = "/api/v1/auth/login";
const ME: &str = "/api/v1/me";

fn registration(email: &str) -> Value {
    json!({"email": email, "password": "password123", "name": "Ada Lovelace"})
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The secret the app signs user tokens with.
fn app_secret(app: &TestApp) -> String {
    app.jwt_secret()
}

fn claims(sub: &str, role: &str, iat: i64, exp: i64) -> Value {
    json!({"sub": sub, "role": role, "iat": iat, "exp": exp, "iss": "bazaar", "aud": "bazaar-api"})
}

fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    // Base64url without padding, as JWTs use; tiny, to avoid another dependency.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Asserts a 401 problem with a Bearer challenge.
async fn assert_unauthorized(response: reqwest::Response) -> Value {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "401 without a Bearer WWW-Authenticate challenge: {challenge:?}"
    );
    assert_problem(response, 401).await
}

#[tokio::test]
async fn register_returns_201_with_token_and_normalised_user() {
    let app = spawn_app().await;
    let response = app
        .post_json(REGISTER, &registration("  Ada@Example.COM "), None)
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    let user = &body["user"];
    let id = user["id"].as_str().expect("user.id is a string");
    assert!(uuid::Uuid::try_parse(id).is_ok(), "user.id is a UUID: {id}");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["role"], "customer");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    // The token works straight away.
    let token = body["token"].as_str().unwrap();
    let me = app.get(ME, Some(token)).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(&me, user);
}

#[tokio::test]
async fn duplicate_email_is_409_even_with_different_case() {
    let app = spawn_app().await;
    app.register("grace@example.com").await;
    let same = app
        .post_json(REGISTER, &registration("grace@example.com"), None)
        .await;
    assert_problem(same, 409).await;
    let cased = app
        .post_json(REGISTER, &registration("GRACE@Example.com"), None)
        .await;
    assert_problem(cased, 409).await;
}

#[tokio::test]
async fn short_password_is_422_naming_password() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "short@example.com", "password": "1234567", "name": "Short"}),
            None,
        )
        .await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["password"], "{problem}");
    assert!(problem["errors"][0]["message"].is_string(), "{problem}");
}

#[tokio::test]
async fn invalid_email_is_422_naming_email() {
    let app = spawn_app().await;
    for email in [
        "not-an-email",
        "ada@",
        "@example.com",
        "a b@example.com",
        "",
    ] {
        let response = app
            .post_json(
                REGISTER,
                &json!({"email": email, "password": "password123", "name": "Ada"}),
                None,
            )
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(error_fields(&problem), ["email"], "{email:?}: {problem}");
    }
}

#[tokio::test]
async fn every_invalid_field_is_listed() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "nope", "password": "short", "name": ""}),
            None,
        )
        .await;
    let problem = assert_problem(response, 422).await;
    let mut fields = error_fields(&problem);
    fields.sort();
    assert_eq!(fields, ["email", "name", "password"], "{problem}");
}

#[tokio::test]
async fn missing_field_is_422_naming_it() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "missing@example.com", "password": "password123"}),
            None,
        )
        .await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["name"], "{problem}");

    let response = app
        .post_json(LOGIN, &json!({"email": "missing@example.com"}), None)
        .await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["password"], "{problem}");
}

#[tokio::test]
async fn wrong_type_is_400() {
    let app = spawn_app().await;
    for body in [
        json!({"email": 42, "password": "password123", "name": "Ada"}),
        json!({"email": "t@example.com", "password": ["password123"], "name": "Ada"}),
        json!({"email": "t@example.com", "password": "password123", "name": null}),
        json!("t@example.com"),
        json!(42),
        json!(null),
    ] {
        let response = app.post_json(REGISTER, &body, None).await;
        assert_problem(response, 400).await;
    }
}

#[tokio::test]
async fn unknown_field_is_400() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "u@example.com", "password": "password123", "name": "U", "role": "admin"}),
            None,
        )
        .await;
    assert_problem(response, 400).await;
    // And no account was made with it.
    let login = app
        .post_json(
            LOGIN,
            &json!({"email": "u@example.com", "password": "password123"}),
            None,
        )
        .await;
    assert_problem(login, 401).await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in [
        r#"{"email": "m@example.com", "password": "#,
        "not json at all",
        "",
        r#"{"email": "m@example.com", "password": "password123", "name": "M"} trailing"#,
        r#"{"email": "m@example.com", "password": "password123", "name": "M",}"#,
    ] {
        let response = app
            .post_raw(REGISTER, body, Some("application/json"), None)
            .await;
        assert_problem(response, 400).await;
    }
}

#[tokio::test]
async fn missing_or_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let body = registration("ct@example.com").to_string();
    let response = app.post_raw(REGISTER, body.clone(), None, None).await;
    assert_problem(response, 415).await;
    let response = app
        .post_raw(REGISTER, body.clone(), Some("text/plain"), None)
        .await;
    assert_problem(response, 415).await;
    // With a charset parameter it is still JSON.
    let response = app
        .post_raw(
            REGISTER,
            body,
            Some("application/json; charset=utf-8"),
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn login_succeeds_with_the_right_password_only() {
    let app = spawn_app().await;
    let (_, id) = app.register("login@example.com").await;

    let response = app
        .post_json(
            LOGIN,
            &json!({"email": "login@example.com", "password": "password123"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["user"]["email"], "login@example.com");
    assert_eq!(body["user"]["name"], "Test User");
    assert_eq!(body["user"]["role"], "customer");

    // Emails are normalised on login too.
    let response = app
        .post_json(
            LOGIN,
            &json!({"email": "LOGIN@example.COM", "password": "password123"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);

    let wrong = app
        .post_json(
            LOGIN,
            &json!({"email": "login@example.com", "password": "password124"}),
            None,
        )
        .await;
    assert_unauthorized(wrong).await;

    let unknown = app
        .post_json(
            LOGIN,
            &json!({"email": "nobody@example.com", "password": "password123"}),
            None,
        )
        .await;
    assert_unauthorized(unknown).await;

    let not_an_email = app
        .post_json(
            LOGIN,
            &json!({"email": "nobody", "password": "password123"}),
            None,
        )
        .await;
    assert_unauthorized(not_an_email).await;
}

#[tokio::test]
async fn admin_bootstrap_account_has_the_admin_role() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let me: Value = app.get(ME, Some(&token)).await.json().await.unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["email"], crate::helpers::ADMIN_EMAIL);
}

#[tokio::test]
async fn me_returns_the_caller() {
    let app = spawn_app().await;
    let (token, id) = app.register("me@example.com").await;
    let response = app.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": id, "email": "me@example.com", "name": "Test User", "role": "customer"})
    );
}

#[tokio::test]
async fn the_auth_scheme_is_case_insensitive() {
    // RFC 9110 11.1: the scheme name is case-insensitive.
    let app = spawn_app().await;
    let (token, _) = app.register("scheme@example.com").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = app
            .client
            .get(app.url(ME))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn me_without_a_token_is_401_with_a_challenge() {
    let app = spawn_app().await;
    assert_unauthorized(app.get(ME, None).await).await;
}

#[tokio::test]
async fn me_with_a_malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    let (token, _) = app.register("hdr@example.com").await;
    for value in [
        format!("Basic {token}"),
        token.clone(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
    ] {
        let response = app
            .client
            .get(app.url(ME))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_unauthorized(response).await;
    }
    // Bytes that are not text.
    let response = app
        .client
        .get(app.url(ME))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_unauthorized(response).await;
}

#[tokio::test]
async fn me_with_a_garbage_token_is_401() {
    let app = spawn_app().await;
    for token in ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "...."] {
        assert_unauthorized(app.get(ME, Some(token)).await).await;
    }
}

#[tokio::test]
async fn a_token_we_sign_with_the_app_secret_is_accepted() {
    // The control for the forged-token tests below: the same construction with the
    // real secret and a live expiry works, so their 401s are for the stated reason.
    let app = spawn_app().await;
    let (_, id) = app.register("control@example.com").await;
    let token = sign(
        &claims(&id, "customer", now(), now() + 600),
        app_secret(&app).as_bytes(),
    );
    let response = app.get(ME, Some(&token)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401() {
    let app = spawn_app().await;
    let (_, id) = app.register("forged@example.com").await;
    let token = sign(
        &claims(&id, "admin", now(), now() + 600),
        b"not-the-app-secret-not-the-app-secret",
    );
    assert_unauthorized(app.get(ME, Some(&token)).await).await;
}

#[tokio::test]
async fn an_alg_none_token_is_401() {
    let app = spawn_app().await;
    let (_, id) = app.register("none@example.com").await;
    let payload = claims(&id, "admin", now(), now() + 600).to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()));
        assert_unauthorized(app.get(ME, Some(&unsigned)).await).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = spawn_app().await;
    let (_, id) = app.register("expired@example.com").await;
    // Well past any clock-skew leeway.
    let token = sign(
        &claims(&id, "customer", now() - 7200, now() - 3600),
        app_secret(&app).as_bytes(),
    );
    assert_unauthorized(app.get(ME, Some(&token)).await).await;
}

#[tokio::test]
async fn a_token_for_another_issuer_or_audience_is_401() {
    let app = spawn_app().await;
    let (_, id) = app.register("aud@example.com").await;
    let secret = app_secret(&app);
    let mut wrong_aud = claims(&id, "customer", now(), now() + 600);
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = claims(&id, "customer", now(), now() + 600);
    wrong_iss["iss"] = json!("someone-else");
    let mut no_exp = claims(&id, "customer", now(), now() + 600);
    no_exp.as_object_mut().unwrap().remove("exp");
    for claims in [wrong_aud, wrong_iss, no_exp] {
        let token = sign(&claims, secret.as_bytes());
        assert_unauthorized(app.get(ME, Some(&token)).await).await;
    }
}

#[tokio::test]
async fn a_valid_token_for_an_unknown_user_is_401() {
    let app = spawn_app().await;
    let token = sign(
        &claims(
            &uuid::Uuid::now_v7().to_string(),
            "customer",
            now(),
            now() + 600,
        ),
        app_secret(&app).as_bytes(),
    );
    assert_unauthorized(app.get(ME, Some(&token)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_make_one_account() {
    let app = spawn_app().await;
    let body = registration("race@example.com");
    let attempts = (0..8).map(|_| app.post_json(REGISTER, &body, None));
    let statuses = statuses(attempts).await;
    assert_eq!(tally(&statuses, [201, 409]), (1, 7), "{statuses:?}");
}

#[tokio::test]
async fn a_burst_of_logins_from_one_client_gets_429_with_retry_after() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.auth_rate_limit_per_second = 1;
        c.auth_rate_limit_burst = 3;
    })
    .await;
    let login =
        json!({"email": crate::helpers::ADMIN_EMAIL, "password": crate::helpers::ADMIN_PASSWORD});
    let mut limited = None;
    for _ in 0..30 {
        let response = app.post_json(LOGIN, &login, None).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = limited.expect("30 rapid logins at 1/s with a burst of 3 hit the auth limit");
    let retry_after = retry_after_secs(&response);
    assert!(retry_after >= 1, "{retry_after}");
    assert_problem(response, 429).await;
    // Registration shares the limit; the rest of the API does not.
    let response = app
        .post_json(REGISTER, &registration("late@example.com"), None)
        .await;
    assert_problem(response, 429).await;
    // So does the shop's sign-in form, which hashes a password too.
    let response = app
        .client
        .post(app.url("/account/signin"))
        .form(&[("email", "late@example.com"), ("password", "password123")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    for _ in 0..10 {
        assert_eq!(
            app.get("/api/v1/products?limit=1", None).await.status(),
            200
        );
    }
}

#[tokio::test]
async fn a_name_with_control_or_direction_characters_is_422_naming_name() {
    let app = spawn_app().await;
    for name in [
        "Ada\nBcc: victim@example.com",
        "Ada\r\nLovelace",
        "\u{202e}ecalevoL adA",
        "   ",
    ] {
        let response = app
            .post_json(
                REGISTER,
                &json!({"email": "named@example.com", "password": "password123", "name": name}),
                None,
            )
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(error_fields(&problem), vec!["name"], "{name:?}: {problem}");
    }
    let long = "x".repeat(101);
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "named@example.com", "password": "password123", "name": long}),
            None,
        )
        .await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(error_fields(&problem), vec!["name"]);
}

#[tokio::test]
async fn the_welcome_email_quotes_the_name_as_data() {
    let app = spawn_app().await;
    let name = "Ada » Your refund: http://evil.example";
    let response = app
        .post_json(
            REGISTER,
            &json!({"email": "welcome@example.com", "password": "password123", "name": name}),
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let email = crate::helpers::eventually("the welcome email", || async {
        crate::helpers::emails(&app.data_dir)
            .into_iter()
            .find(|e| e.contains("welcome@example.com") && e.contains("X-Bazaar-Kind: welcome"))
            .ok_or_else(|| "no welcome email yet".to_owned())
    })
    .await;
    let (head, body) = email.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Subject: Welcome to bazaar\r\n"), "{head}");
    assert!(body.starts_with("Hello,\r\n"), "{body}");
    assert!(
        body.contains("\r\nAccount name: «Ada \\u{bb} Your refund: http://evil.example»\r\n"),
        "{body}"
    );
    assert_eq!(body.matches("evil.example").count(), 1, "{body}");
}

/// A client whose requests come from `ip` (any 127.x.y.z is this machine): how the
/// throttling tests tell an attacker from the account's owner.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login_from(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(app.url(LOGIN))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// A 429's `Retry-After`, in seconds.
fn retry_after_secs(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a number of seconds")
}

/// The 429's `Retry-After`, in seconds; the body is a problem.
async fn assert_throttled(response: reqwest::Response) -> u64 {
    let retry_after = retry_after_secs(&response);
    let problem = assert_problem(response, 429).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("failed sign-ins")),
        "{problem}"
    );
    retry_after
}

/// Wrong passwords from `client` until the throttle's wait is at least `at_least`
/// seconds (waiting out the shorter ones); returns that wait.
async fn fail_until_backoff(
    app: &TestApp,
    client: &reqwest::Client,
    email: &str,
    at_least: u64,
) -> u64 {
    for _ in 0..30 {
        let response = login_from(app, client, email, "guess-1234").await;
        if response.status() == 401 {
            continue;
        }
        let wait = assert_throttled(response).await;
        if wait >= at_least {
            return wait;
        }
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    panic!("30 wrong passwords never made the throttle wait {at_least} s");
}

#[tokio::test]
async fn five_wrong_passwords_are_free_then_the_next_attempt_gets_429() {
    let app = spawn_app().await;
    app.register("victim@example.com").await;
    let attacker = client_from([127, 0, 0, 2]);
    for attempt in 1..=6 {
        let response = login_from(&app, &attacker, "victim@example.com", "guess-1234").await;
        assert_eq!(response.status(), 401, "attempt {attempt} is checked");
    }
    // The sixth failure started the backoff: even the right password waits.
    let retry_after =
        assert_throttled(login_from(&app, &attacker, "victim@example.com", "password123").await)
            .await;
    assert!((1..=300).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn an_attacked_account_waits_for_strangers_but_not_for_its_owners_known_client() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.set("login_free_attempts", 1);
    })
    .await;
    // The owner registers from 127.0.0.1: a known client of the account.
    app.register("victim@example.com").await;
    let attacker = client_from([127, 0, 0, 2]);
    let stranger = client_from([127, 0, 0, 3]);
    // A backoff long enough for the checks below to happen inside it.
    fail_until_backoff(&app, &attacker, "victim@example.com", 4).await;
    // The account is held back for a stranger even with the right password, and
    // the attacker's IP for any account…
    assert_throttled(login_from(&app, &stranger, "victim@example.com", "password123").await).await;
    assert_throttled(
        login_from(
            &app,
            &attacker,
            crate::helpers::ADMIN_EMAIL,
            crate::helpers::ADMIN_PASSWORD,
        )
        .await,
    )
    .await;
    // …but not the client that signed in to it before.
    let owner = login_from(&app, &app.client, "victim@example.com", "password123").await;
    assert_eq!(owner.status(), 200);
    // That success cleared the account's failures: the stranger gets in too.
    assert_eq!(
        login_from(&app, &stranger, "victim@example.com", "password123")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn the_login_backoff_is_capped() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.set("login_free_attempts", 1);
        c.set("login_backoff_max_secs", 1);
    })
    .await;
    app.register("capped@example.com").await;
    let attacker = client_from([127, 0, 0, 4]);
    for round in 0..3 {
        // Failures until the throttle answers; then it never asks for more than the
        // cap, however many failures came before.
        let mut throttled = None;
        for _ in 0..3 {
            let response = login_from(&app, &attacker, "capped@example.com", "guess-1234").await;
            if response.status() == 429 {
                throttled = Some(response);
                break;
            }
            assert_eq!(response.status(), 401);
        }
        let response = throttled.unwrap_or_else(|| panic!("round {round}: never throttled"));
        assert_eq!(assert_throttled(response).await, 1, "round {round}");
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    }
    // The right password from a fresh client, once the wait is over, gets in.
    let owner = client_from([127, 0, 0, 5]);
    assert_eq!(
        login_from(&app, &owner, "capped@example.com", "password123")
            .await
            .status(),
        200
    );
}
