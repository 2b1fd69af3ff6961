//! The real `bazaar` binary: its command line, its logs, its signals and its data
//! across restarts. Every child is killed when its guard drops, even on a failed
//! assertion; every wait is bounded. Those that keep data use a [`DataDir`], so with
//! `BAZAAR_TEST_BACKEND=postgres` they run on a fresh PostgreSQL database.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{DataDir, Proc, SEED, Server, bazaar, eventually_within, free_port};

/// Polls the captured stdout (bounded) for a JSON line matching `pred`.
async fn wait_for_line(proc: &Proc, pred: impl Fn(&Value) -> bool) -> Value {
    eventually_within("such a log line", Duration::from_secs(10), || {
        let stdout = proc.stdout();
        let found = stdout
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|v| pred(v))
            .ok_or_else(|| format!("stdout:\n{}", stdout.join("\n")));
        std::future::ready(found)
    })
    .await
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn assert_log_line(line: &str) -> Value {
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    for key in ["timestamp", "level", "service", "target", "message"] {
        assert!(
            object.get(key).is_some_and(Value::is_string),
            "{key} missing or not a string: {line}"
        );
    }
    let timestamp = value["timestamp"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "timestamp is not RFC 3339: {line}"
    );
    assert_eq!(value["service"], "bazaar", "{line}");
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&value["level"].as_str().unwrap()),
        "{line}"
    );
    value
}

#[tokio::test]
async fn serve_announces_itself_logs_json_and_stops_on_sigterm() {
    let dir = DataDir::new().await;
    let mut server = Server::start(&dir, &[("RUST_LOG", "debug")]).await;

    // The URL for humans, on stderr.
    let announcement = format!("ready at http://127.0.0.1:{}", server.port);
    eventually_within(
        &format!("stderr to say {announcement:?}"),
        Duration::from_secs(10),
        || {
            let stderr = server.proc.stderr();
            std::future::ready(if stderr.contains(&announcement) {
                Ok(())
            } else {
                Err(stderr)
            })
        },
    )
    .await;

    // A request with a W3C trace context and a request id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = server
        .client
        .get(server.url("/api/v1/products?limit=1"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("x-request-id", "process-test-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = wait_for_line(&server.proc, |v| {
        v["request_id"] == "process-test-request-1" && v["message"] == "finished processing request"
    })
    .await;
    assert_eq!(line["trace_id"], trace_id, "{line}");
    assert!(is_hex(line["span_id"].as_str().unwrap_or(""), 16), "{line}");

    // Without them: a generated request id (the one echoed) and a fresh trace.
    let response = server
        .client
        .get(server.url("/api/v1/products?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a generated request id")
        .to_owned();
    let line = wait_for_line(&server.proc, |v| {
        v["request_id"] == request_id.as_str() && v["message"] == "finished processing request"
    })
    .await;
    let fresh = line["trace_id"].as_str().unwrap_or("");
    assert!(is_hex(fresh, 32) && fresh != trace_id, "{line}");
    assert!(is_hex(line["span_id"].as_str().unwrap_or(""), 16), "{line}");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    assert_eq!(status.code(), Some(0));

    // Every stdout line, start to shutdown, is a JSON log object.
    let lines = server.proc.stdout();
    assert!(!lines.is_empty());
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        assert_log_line(line);
    }
}

#[tokio::test]
async fn a_restart_keeps_users_and_does_not_reseed() {
    let dir = DataDir::new().await;
    let mut first = Server::start(&dir, &[]).await;
    let session = first
        .register("restart@example.com", "restart-password")
        .await;
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(first.products().await.len(), SEED);
    assert!(first.terminate().success());

    let second = Server::start(&dir, &[]).await;
    let login = second
        .login("restart@example.com", "restart-password")
        .await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["user"]["id"], session["user"]["id"]);
    // The token secret survived too: a token from before the restart still works.
    let me = second
        .client
        .get(second.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(second.products().await.len(), SEED, "seeded twice");
}

#[tokio::test]
async fn migrate_creates_the_databases_and_can_run_again() {
    let dir = DataDir::new().await;
    for _ in 0..2 {
        let output = Proc::run(dir.bazaar(&["migrate"]));
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for module in ["identity", "catalog", "cart"] {
        if let Some(url) = dir.database_url() {
            assert!(
                chassis::store::Store::postgres_schema_exists(url, module)
                    .await
                    .unwrap(),
                "no {module} schema after migrate"
            );
        } else {
            assert!(
                dir.path().join(format!("{module}.db")).exists(),
                "no {module}.db after migrate"
            );
        }
    }
    // A migrated, empty data dir still gets its demo catalog on first serve.
    let server = Server::start(&dir, &[]).await;
    assert_eq!(server.products().await.len(), SEED);
}

#[tokio::test]
async fn seed_adds_demo_products() {
    let dir = DataDir::new().await;
    for _ in 0..2 {
        let output = Proc::run(dir.bazaar(&["seed", "--products", "40"]));
        assert!(
            output.status.success(),
            "seed failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let server = Server::start(&dir, &[]).await;
    let products = server.products().await;
    assert_eq!(products.len(), 40, "seeding twice is idempotent");
    let mut skus: Vec<String> = products
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect();
    skus.sort();
    let expected: Vec<String> = (1..=40).map(|i| format!("BZ-{i:05}")).collect();
    assert_eq!(skus, expected);
}

#[tokio::test]
async fn admin_create_makes_an_admin_account() {
    let dir = DataDir::new().await;
    let output = Proc::run(dir.bazaar(&[
        "admin",
        "create",
        "--email",
        "Boss@Example.com",
        "--password",
        "boss-password",
    ]));
    assert!(
        output.status.success(),
        "admin create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let server = Server::start(&dir, &[]).await;
    let login = server.login("boss@example.com", "boss-password").await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["email"], "boss@example.com");
    let token = body["token"].as_str().unwrap();
    let created = server
        .client
        .post(server.url("/api/v1/products"))
        .bearer_auth(token)
        .json(&json!({
            "sku": "BOSS-1", "name": "Boss Mug", "description": "",
            "price_cents": 100, "currency": "USD", "stock": 1
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

/// Security finding 1 (admin takeover by pre-registration): an account someone
/// registered with the admin's email is never promoted, neither by the bootstrap at
/// start nor by `admin create`; it stays a customer with its own password.
#[tokio::test]
async fn admin_bootstrap_never_promotes_an_account_someone_else_registered() {
    const EMAIL: &str = "boss@example.com";
    let dir = DataDir::new().await;
    let mut server = Server::start(&dir, &[]).await;
    server.register(EMAIL, "attacker-password").await;
    server.terminate();

    // The start with that admin configured fails and says why.
    let mut start = dir.bazaar(&["serve", "--http-addr", "127.0.0.1:0"]);
    start.envs([
        ("BAZAAR_ADMIN_EMAIL", EMAIL),
        ("BAZAAR_ADMIN_PASSWORD", "operator-password"),
    ]);
    let output = Proc::run(start);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started with a taken admin email");
    assert!(
        stderr.contains("already exists and is not an admin") && stderr.contains(EMAIL),
        "the error says what happened: {stderr}"
    );

    let output = Proc::run(dir.bazaar(&[
        "admin",
        "create",
        "--email",
        EMAIL,
        "--password",
        "operator-password",
    ]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "admin create promoted: {stderr}");
    assert!(stderr.contains("is not an admin"), "{stderr}");

    // Still the customer it was, with the password its owner chose.
    let server = Server::start(&dir, &[]).await;
    assert_eq!(server.login(EMAIL, "operator-password").await.status(), 401);
    let login = server.login(EMAIL, "attacker-password").await;
    assert_eq!(login.status(), 200);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["user"]["role"], "customer");
}

/// An admin that already exists is left as it is: the bootstrap on every later start
/// and a repeated `admin create` succeed without touching it.
#[tokio::test]
async fn admin_bootstrap_leaves_an_existing_admin_alone() {
    let dir = DataDir::new().await;
    let env = [
        ("BAZAAR_ADMIN_EMAIL", "root@example.com"),
        ("BAZAAR_ADMIN_PASSWORD", "first-password"),
    ];
    let mut server = Server::start(&dir, &env).await;
    server.terminate();
    let output = Proc::run(dir.bazaar(&[
        "admin",
        "create",
        "--email",
        "root@example.com",
        "--password",
        "other-password",
    ]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server = Server::start(
        &dir,
        &[
            ("BAZAAR_ADMIN_EMAIL", "root@example.com"),
            ("BAZAAR_ADMIN_PASSWORD", "second-password"),
        ],
    )
    .await;
    assert_eq!(
        server
            .login("root@example.com", "second-password")
            .await
            .status(),
        401
    );
    let login = server.login("root@example.com", "first-password").await;
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["user"]["role"], "admin");
}

#[test]
fn admin_create_rejects_a_short_password() {
    let dir = tempfile::tempdir().unwrap();
    let output = Proc::run(bazaar(&[
        "admin",
        "create",
        "--email",
        "boss@example.com",
        "--password",
        "short",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("password"), "{stderr}");
}

#[test]
fn version_and_help() {
    let output = Proc::run(bazaar(&["--version"]));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("bazaar {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );

    let output = Proc::run(bazaar(&["--help"]));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "migrate", "seed", "admin"] {
        assert!(
            stdout.contains(command),
            "--help does not mention {command}"
        );
    }

    let output = Proc::run(bazaar(&["serve", "--help"]));
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("--http-addr") && stdout.contains("--data-dir"),
        "{stdout}"
    );

    let output = Proc::run(bazaar(&["no-such-command"]));
    assert!(!output.status.success());
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let serve = || bazaar(&["serve", "--http-addr", &addr, "--data-dir", data_dir]);

    let mut command = serve();
    command.env("BAZAAR_REQUEST_TIMEOUT_MS", "soon");
    let output = Proc::run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("request_timeout_ms"), "{stderr}");

    let mut command = serve();
    command.env("BAZAAR_JWT_SECRET", "too-short");
    let output = Proc::run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("jwt_secret"), "{stderr}");

    let config = dir.path().join("bazaar.toml");
    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let mut command = serve();
    command.arg("--config").arg(&config);
    let output = Proc::run(command);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("no_such_key"), "{stderr}");
}

/// An OTLP/HTTP trace receiver written for the test: what a collector would get.
struct OtlpReceiver {
    url: String,
    received: std::sync::Arc<
        std::sync::Mutex<
            Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
        >,
    >,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = std::sync::Arc::clone(&received);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = std::sync::Arc::clone(&store);
                    async move {
                        assert_eq!(headers["content-type"], "application/x-protobuf");
                        let request =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        store.lock().unwrap().push(request);
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let (addr, task) = testkit::http::serve(app).await;
        let url = format!("http://{addr}");
        Self {
            url,
            received,
            task,
        }
    }

    /// `(service.name, span name, parent span id)` of every span of `trace_id` received.
    fn spans_of(&self, trace_id: &str) -> Vec<(String, String, String)> {
        let mut found = Vec::new();
        for request in self.received.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                s,
                            ),
                        ) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        if hex(&span.trace_id) == trace_id {
                            found.push((
                                service.clone(),
                                span.name.clone(),
                                hex(&span.parent_span_id),
                            ));
                        }
                    }
                }
            }
        }
        found
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[tokio::test]
async fn spans_go_to_the_otlp_endpoint_the_standard_variables_name() {
    let receiver = OtlpReceiver::start().await;
    let dir = DataDir::new().await;
    let mut server = Server::start(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_SERVICE_NAME", "shop-edge"),
            // Export within a fraction of a second rather than the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let response = server
        .client
        .get(server.url("/api/v1/products?limit=1"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spans = eventually_within(
        "a span of the trace at the receiver",
        Duration::from_secs(15),
        || {
            let spans = receiver.spans_of(trace_id);
            std::future::ready(if spans.is_empty() {
                Err(format!("none; stderr:\n{}", server.proc.stderr()))
            } else {
                Ok(spans)
            })
        },
    )
    .await;
    assert!(
        spans.contains(&(
            "shop-edge".to_owned(),
            "GET /api/v1/products".to_owned(),
            "00f067aa0ba902b7".to_owned()
        )),
        "{spans:?}"
    );

    // A clean stop flushes the exporter (the exit status says it did not hang or fail).
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn telemetry_can_be_turned_off_to_measure_what_it_costs() {
    let dir = DataDir::new().await;
    let mut server = Server::start(
        &dir,
        &[
            ("OTEL_SDK_DISABLED", "true"),
            ("BAZAAR_METRICS_ENABLED", "false"),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let response = server
        .client
        .get(server.url("/api/v1/products?limit=1"))
        .header("x-request-id", "untraced-request")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = wait_for_line(&server.proc, |v| {
        v["request_id"] == "untraced-request" && v["message"] == "finished processing request"
    })
    .await;
    assert!(
        line.get("trace_id").is_none(),
        "no tracing, no trace id: {line}"
    );
    let metrics = server.scrape().await;
    assert!(!metrics.contains("http_requests_total"), "{metrics}");
    let status = server.terminate();
    assert!(status.success(), "{status}");
}
