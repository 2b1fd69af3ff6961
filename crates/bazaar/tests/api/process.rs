//! The real `bazaar` binary: its command line, its logs, its signals and its data
//! across restarts. Every child is killed when its guard drops, even on a failed
//! assertion; every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::all_products;

const BIN: &str = env!("CARGO_BIN_EXE_bazaar");
const SEED: usize = 30;
const STARTUP: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(30);

/// A `bazaar` command with a clean environment: no inherited `BAZAAR_*` or
/// `RUST_LOG`, a small demo catalog.
fn bazaar(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BAZAAR_") {
            command.env_remove(key);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env("BAZAAR_SEED_PRODUCTS", SEED.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Copies `reader` line by line into `sink` until EOF, so the child never blocks on
/// a full pipe.
fn collect<R: Read + Send + 'static>(reader: R, sink: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    sink.lock().unwrap().push(line);
                }
            }
        }
    })
}

/// A running child with its output captured; killed on drop.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("bazaar starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for the child to exit; then all its output has been read.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "bazaar did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        status
    }

    /// Runs to completion (bounded) and returns what it printed.
    fn run(command: Command) -> Output {
        let mut proc = Self::spawn(command);
        let status = proc.wait(EXIT);
        Output {
            status,
            stdout: proc.stdout().join("\n").into_bytes(),
            stderr: proc.stderr().into_bytes(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port: bind port 0, read the port, let it go.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `bazaar serve` on a fresh port over `data_dir`, ready to take requests.
struct Server {
    proc: Proc,
    port: u16,
    base: String,
    client: Client,
}

impl Server {
    async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = bazaar(&[
            "serve",
            "--http-addr",
            &addr,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        command.envs(env.iter().copied());
        let mut proc = Proc::spawn(command);
        let base = format!("http://{addr}");
        let client = client();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = proc.child.try_wait().unwrap() {
                proc.wait(EXIT);
                panic!("bazaar exited early ({status}); stderr:\n{}", proc.stderr());
            }
            if let Ok(response) = client.get(format!("{base}/health/ready")).send().await {
                if response.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bazaar was not ready within {STARTUP:?}; stderr:\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            proc,
            port,
            base,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then a bounded wait for the exit.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.proc.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        self.proc.wait(EXIT)
    }

    async fn register(&self, email: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": "Proc"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    async fn products(&self) -> Vec<Value> {
        all_products(&self.client, &self.base, 100).await
    }
}

/// Polls the captured stdout (bounded) for a JSON line matching `pred`.
async fn wait_for_line(proc: &Proc, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = proc
            .stdout()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|v| pred(v));
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no such log line; stdout:\n{}",
            proc.stdout().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("RUST_LOG", "debug")]).await;

    // The URL for humans, on stderr.
    let announcement = format!("ready at http://127.0.0.1:{}", server.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.proc.stderr().contains(&announcement) {
        assert!(
            Instant::now() < deadline,
            "stderr does not say {announcement:?}:\n{}",
            server.proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(dir.path(), &[]).await;
    let session = first
        .register("restart@example.com", "restart-password")
        .await;
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(first.products().await.len(), SEED);
    assert!(first.terminate().success());

    let second = Server::start(dir.path(), &[]).await;
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
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let output = Proc::run(bazaar(&["migrate", "--data-dir", data_dir]));
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for module in ["identity", "catalog", "cart"] {
        assert!(
            dir.path().join(format!("{module}.db")).exists(),
            "no {module}.db after migrate"
        );
    }
    // A migrated, empty data dir still gets its demo catalog on first serve.
    let server = Server::start(dir.path(), &[]).await;
    assert_eq!(server.products().await.len(), SEED);
}

#[tokio::test]
async fn seed_adds_demo_products() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let output = Proc::run(bazaar(&[
            "seed",
            "--products",
            "40",
            "--data-dir",
            data_dir,
        ]));
        assert!(
            output.status.success(),
            "seed failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let server = Server::start(dir.path(), &[]).await;
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
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let output = Proc::run(bazaar(&[
        "admin",
        "create",
        "--email",
        "Boss@Example.com",
        "--password",
        "boss-password",
        "--data-dir",
        data_dir,
    ]));
    assert!(
        output.status.success(),
        "admin create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let server = Server::start(dir.path(), &[]).await;
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
