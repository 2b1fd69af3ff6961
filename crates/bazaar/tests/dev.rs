//! `bazaar dev --split` end to end: the gateway and eight modules as child processes on
//! a fresh PostgreSQL database and a private NATS prefix, used through the gateway,
//! then stopped with SIGINT.
//!
//! Needs BAZAAR_TEST_DATABASE_URL (an admin URL, e.g.
//! postgres://postgres@127.0.0.1:5432/postgres) and BAZAAR_TEST_NATS_URL (e.g.
//! nats://127.0.0.1:4222); skipped without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection as _;
use testkit::eventually_within;
use testkit::postgres::TestDatabase;

/// What `dev --split` runs: the gateway and every module.
fn services() -> impl Iterator<Item = &'static str> {
    std::iter::once(bazaar::topology::GATEWAY).chain(bazaar::registry().names())
}

/// The run's JetStream streams (`<PREFIX>_<SOURCE>`), deleted (best effort) at the end.
struct Streams {
    url: String,
    prefix: String,
}

impl Drop for Streams {
    fn drop(&mut self) {
        testkit::nats::delete_streams(&self.url, &self.prefix);
    }
}

/// The dev process, with its output collected; interrupted (then killed) if the test
/// fails half way, so its children go too.
struct Dev {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Dev {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    fn output(&self) -> String {
        format!(
            "--- stderr\n{}\n--- stdout (last 60 lines)\n{}",
            self.stderr().join("\n"),
            self.stdout()
                .iter()
                .rev()
                .take(60)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        testkit::wait_exit(&mut self.child, limit)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(self.pid(), Signal::SIGINT);
            if self.wait_for_exit(Duration::from_secs(45)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The pids from the table `dev` prints when ready (`[dev] <service>  <url>  <pid>`).
fn table_pids(stderr: &[String]) -> Vec<(String, i32)> {
    stderr
        .iter()
        .filter_map(|line| {
            let mut words = line.strip_prefix("[dev] ")?.split_whitespace();
            let (service, url, pid) = (words.next()?, words.next()?, words.next()?);
            (services().any(|s| s == service) && url.starts_with("http://"))
                .then(|| Some((service.to_owned(), pid.parse().ok()?)))
                .flatten()
        })
        .collect()
}

#[tokio::test]
async fn dev_split_runs_every_service_and_stops_cleanly_on_sigint() {
    const TEST: &str = "dev_split_runs_every_service_and_stops_cleanly_on_sigint";
    let Some(admin_url) = testkit::postgres::url(TEST) else {
        return;
    };
    let Some(nats_url) = testkit::nats::url(TEST) else {
        return;
    };
    let database = TestDatabase::create(&admin_url).await;
    let data_dir = tempfile::tempdir().unwrap();
    let streams = Streams {
        url: nats_url.clone(),
        prefix: format!("devtest{}", testkit::unique()),
    };
    // The gateway and its eight modules after it.
    let port = testkit::free_port_run(9);
    let gateway = format!("http://127.0.0.1:{port}");

    let mut command = Command::new(env!("CARGO_BIN_EXE_bazaar"));
    command
        .args(["dev", "--split"])
        .env("BAZAAR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("BAZAAR_DATA_DIR", data_dir.path())
        .env("BAZAAR_DATABASE_URL", &database.url)
        .env("BAZAAR_NATS_URL", &nats_url)
        .env("BAZAAR_NATS_PREFIX", &streams.prefix)
        .env("BAZAAR_SEED_PRODUCTS", "10")
        .env_remove("BAZAAR_LOG_FORMAT")
        .env_remove("BAZAAR_JWT_SECRET")
        .env_remove("BAZAAR_SERVICE_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start bazaar dev --split");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let mut dev = Dev {
        child,
        stdout,
        stderr,
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    eventually_within("the gateway to be ready", Duration::from_secs(60), || {
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!(
                "bazaar dev exited with {status} before it was ready\n{}",
                dev.output()
            );
        }
        let output = dev.output();
        let ready = testkit::answers_ok(&http, &format!("{gateway}/health/ready"));
        async move { ready.await.map_err(|e| format!("{e}\n{output}")) }
    })
    .await;

    // Each child has a key directory of its own: its private key and every public key.
    for name in services() {
        let mut private: Vec<String> =
            std::fs::read_dir(data_dir.path().join("service-keys").join(name))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "key"))
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
        private.sort();
        assert_eq!(private, [format!("{name}.key")], "{name}");
    }

    // A role per module (ADR 0008): each module's schema is owned by its own role, and
    // each module's connections are that role's, never the administrator's URL given.
    let mut admin = sqlx::PgConnection::connect(&database.url).await.unwrap();
    for module in bazaar::registry().names() {
        let role = format!("bazaar_{module}");
        let (owner,): (String,) = sqlx::query_as(
            "SELECT CAST(pg_get_userbyid(nspowner) AS TEXT) FROM pg_namespace WHERE nspname = $1",
        )
        .bind(module)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(owner, role, "{module}'s schema");
        let (connections,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND usename = $1",
        )
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(connections > 0, "{module} connects as {role}");
    }
    let (user,): (String,) = sqlx::query_as("SELECT CAST(current_user AS TEXT)")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let (as_admin,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND usename = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&user)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        as_admin, 0,
        "no process stays connected as the administrator"
    );
    admin.close().await.unwrap();

    let products: serde_json::Value = http
        .get(format!("{gateway}/api/v1/products"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        products["items"].as_array().map(Vec::len),
        Some(10),
        "{products}"
    );

    let email = format!("dev-{}@example.com", testkit::unique());
    let registered = http
        .post(format!("{gateway}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": "correct horse", "name": "Dev Test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201, "{}", dev.output());
    let registered: serde_json::Value = registered.json().await.unwrap();
    let token = registered["token"].as_str().expect("a token").to_owned();
    let me = http
        .get(format!("{gateway}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "{}", dev.output());
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], email.as_str(), "{me}");
    assert_eq!(me["name"], "Dev Test", "{me}");

    // Every service's output is in the merged stdout, behind its padded name.
    let prefixed_by = |lines: &[String], service: &str| {
        lines.iter().any(|line| {
            line.split_once(" | ")
                .is_some_and(|(name, _)| name.trim_end() == service && name.starts_with(service))
        })
    };
    eventually_within(
        "a stdout line from every service",
        Duration::from_secs(10),
        || {
            let lines = dev.stdout();
            let missing: Vec<_> = services().filter(|s| !prefixed_by(&lines, s)).collect();
            let seen = if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("none from {missing:?}\n{}", dev.output()))
            };
            std::future::ready(seen)
        },
    )
    .await;
    // dev's own banner (not the gateway's line, prefixed with its name), under the
    // table it prints once it has seen the gateway ready too.
    let banner = format!("bazaar is ready at {gateway}");
    eventually_within(
        &format!("`{banner}` from dev"),
        Duration::from_secs(10),
        || {
            let seen = if dev.stderr().iter().any(|l| l.starts_with(&banner)) {
                Ok(())
            } else {
                Err(dev.output())
            };
            std::future::ready(seen)
        },
    )
    .await;
    let stderr = dev.stderr();
    let pids = table_pids(&stderr);
    // The gateway and every module.
    let services = bazaar::registry().names().len() + 1;
    assert_eq!(
        pids.len(),
        services,
        "one row per service\n{}",
        dev.output()
    );

    kill(dev.pid(), Signal::SIGINT).unwrap();
    let status = dev.wait_for_exit(Duration::from_secs(30));
    let Some(status) = status else {
        panic!(
            "bazaar dev did not exit within 30 s of SIGINT\n{}",
            dev.output()
        );
    };
    assert!(
        status.success(),
        "bazaar dev exited with {status}\n{}",
        dev.output()
    );
    for offset in 0..8 {
        assert!(
            !listening(port + offset),
            "port {} still has a listener after dev exited\n{}",
            port + offset,
            dev.output()
        );
    }
    // Every child was waited for: none left running or as a zombie.
    for (service, pid) in pids {
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "{service} (pid {pid}) still exists after dev exited"
        );
    }
    // No child reported as having exited on its own.
    let stderr = dev.stderr();
    assert!(
        !stderr.iter().any(|l| l.contains("the others keep running")),
        "{}",
        dev.output()
    );
}
