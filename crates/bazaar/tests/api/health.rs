use crate::helpers::spawn_app;

#[tokio::test]
async fn live_and_ready() {
    let app = spawn_app().await;
    let live = app.get("/health/live", None).await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready", None).await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    // The monolith checks its stores; the split gateway owns none (each module
    // reports its own readiness to its orchestrator).
    if !crate::helpers::split_topology() {
        assert_eq!(body["checks"]["store:catalog"], "ok");
    }
}

#[tokio::test]
async fn metrics_expose_red_metrics_by_route_template() {
    let app = spawn_app().await;
    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/products/{id}"), None)
            .await
            .status(),
        200
    );
    let text = app.scrape().await.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/v1/products/{id}""#), "{text}");
    assert!(!text.contains(id), "raw ids must not become labels");
}

/// `bazaar health`, the container image's health check: 0 on a ready process, 1 when
/// the URL answers otherwise or nothing listens.
#[tokio::test]
async fn the_health_command_exits_0_only_when_ready() {
    let app = spawn_app().await;
    let health = |url: String| async move {
        tokio::process::Command::new(crate::helpers::BIN)
            .args(["health", "--url", &url, "--timeout-secs", "5"])
            .output()
            .await
            .unwrap()
    };
    let ready = health(app.url("/health/ready")).await;
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let missing = health(app.url("/health/nope")).await;
    assert_eq!(missing.status.code(), Some(1));
    let closed = testkit::closed_addr();
    let nobody = health(format!("http://{closed}/health/ready")).await;
    assert_eq!(nobody.status.code(), Some(1));
}
