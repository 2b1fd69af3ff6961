//! A `Router` called in-process (`tower::ServiceExt::oneshot`), no socket: requests
//! with an optional bearer token, answers as status and JSON.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

/// Serves `router` on a free loopback port, as the real server does (with
/// `ConnectInfo<SocketAddr>`); its address and the serving task.
pub async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (addr, task)
}

/// Sends `request` (over the network) and reads the whole answer as text, whatever
/// its status.
pub async fn text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// A request to `uri`, with `Authorization: Bearer <token>` when given.
pub fn request(method: Method, uri: &str, token: Option<&str>) -> axum::http::request::Builder {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request
}

/// Sends `request` to `app`; the status and the body as JSON (`Null` when it is not
/// JSON).
pub async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    (status, json_body(response.into_body()).await)
}

/// `GET uri`.
pub async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    call(
        app,
        request(Method::GET, uri, token)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// `method uri` with `body` as JSON.
pub async fn send_json(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let request = request(method, uri, token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    call(app, request).await
}

/// The whole body read as JSON; `Null` when it is not JSON.
pub async fn json_body(body: Body) -> Value {
    let bytes = body.collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::{get as get_route, post};

    fn app() -> Router {
        Router::new()
            .route(
                "/who",
                get_route(|headers: axum::http::HeaderMap| async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("nobody")
                        .to_owned();
                    Json(serde_json::json!({ "auth": auth }))
                }),
            )
            .route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
            .route("/text", get_route(|| async { "plain" }))
    }

    #[tokio::test]
    async fn gets_and_posts_json() {
        let app = app();
        let (status, body) = get(&app, "/who", Some("t0k")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["auth"], "Bearer t0k");
        assert_eq!(get(&app, "/who", None).await.1["auth"], "nobody");
        let sent = serde_json::json!({"a": [1, 2]});
        let (status, body) = send_json(&app, Method::POST, "/echo", None, &sent).await;
        assert_eq!((status, body), (StatusCode::OK, sent));
        assert_eq!(get(&app, "/text", None).await.1, Value::Null);
        assert_eq!(get(&app, "/missing", None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_on_a_port_of_its_own() {
        let (addr, task) = serve(app()).await;
        let client = reqwest::Client::new();
        crate::answers_ok(&client, &format!("http://{addr}/text"))
            .await
            .unwrap();
        assert_eq!(
            text(client.get(format!("http://{addr}/text"))).await,
            "plain"
        );
        task.abort();
    }
}
