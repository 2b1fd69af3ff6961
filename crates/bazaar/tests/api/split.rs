//! The split topology as it is deployed: every module the real `bazaar serve --only
//! <module>` process on a port of its own, each with its own schema in a fresh
//! PostgreSQL database, events over NATS JetStream, the gateway in front. A [`Cluster`]
//! starts the nine processes (in [`SPLIT_START_ORDER`], each waited for), stops, kills
//! and restarts any one of them on the port its peers know, and prints every
//! process's output when a test fails.
//!
//! Every test needs `BAZAAR_TEST_DATABASE_URL`, and `BAZAAR_TEST_NATS_SERVER` (a
//! nats-server 2.10+: the tests share a 3-node JetStream cluster of it, streams R3) or
//! `BAZAAR_TEST_NATS_URL` (a single server, streams R1); without them it says it is
//! skipped and passes (fails in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Client;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;
use testkit::nats::{CLUSTER_NODES, NatsCluster, SharedNats};

use crate::helpers::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Api, EXIT, PATIENCE, Proc, SPLIT_START_ORDER, STARTUP,
    TestDatabase, accepted_repeats, assert_problem, bazaar, cart_order_body, delete_streams,
    eventually, eventually_within, free_port, id_of, order_body, test_secret,
};

/// What every split test needs: a PostgreSQL server to create its database in and
/// NATS JetStream (the test binary's 3-node cluster with R3 streams when
/// `BAZAAR_TEST_NATS_SERVER` names a nats-server, as in CI; else the single server
/// `BAZAAR_TEST_NATS_URL` names).
struct Backends {
    database: String,
    nats: SharedNats,
}

/// The backends, or `None` (and a message) when the environment does not name them.
fn backends(test: &str) -> Option<Backends> {
    Some(Backends {
        database: testkit::postgres::url(test)?,
        nats: testkit::nats::shared(test)?,
    })
}

/// How often a waiting loop looks again.
const POLL: Duration = Duration::from_millis(50);
/// Lines of a process's JSON log printed when a test fails (besides warnings).
const LOG_TAIL: usize = 40;
/// Warning and error lines of a process's log printed when a test fails.
const LOG_WARNINGS: usize = 40;
/// How long events may take after a NATS crash: a message delivered but not yet
/// acknowledged when the server died comes back after the consumers' ack wait (30 s).
const REDELIVERY: Duration = Duration::from_secs(75);
/// Waits (bounded, without blocking the runtime) for `proc` to exit, then for its
/// output to be read to the end.
async fn wait_exit(proc: &mut Proc, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        if proc.child.try_wait().unwrap().is_some() {
            return Ok(proc.wait(EXIT));
        }
        if Instant::now() >= deadline {
            return Err(format!("did not exit within {limit:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---- The cluster ----

/// One module's process (one replica of it): its port, kept across restarts, and the
/// output of every incarnation.
struct Service {
    name: &'static str,
    /// Which of the module's replicas (0 when it has one).
    replica: usize,
    port: u16,
    /// Settings of this module only (e.g. the payment provider's latency).
    env: Vec<(String, String)>,
    running: Option<Proc>,
    /// Earlier incarnations and how each ended.
    ended: Vec<(String, Proc)>,
}

/// The nine processes of one split deployment, on a fresh database and a NATS prefix
/// of their own. Dropping it kills every process, deletes the JetStream streams and
/// (through [`TestDatabase`]) the database; when the test is failing, it prints every
/// process's output first.
struct Cluster {
    services: Vec<Service>,
    /// The environment every process shares.
    env: Vec<(String, String)>,
    api: Api,
    nats_url: String,
    nats_prefix: String,
    /// Each process's Ed25519 keys, `<keys>/<name>/` (see [`Cluster::signer`]).
    keys: PathBuf,
    /// `http`, or `https` when every process serves TLS from a throwaway CA.
    scheme: &'static str,
    /// Reaches the processes directly (trusting that CA when there is one).
    direct: Client,
    dir: TempDir,
    database: TestDatabase,
}

impl Cluster {
    /// Starts a deployment against `backends`' PostgreSQL and `nats`; `extra` adds
    /// settings to single modules: `(module, variable, value)`.
    async fn start(backends: &Backends, nats: &SharedNats, extra: &[(&str, &str, &str)]) -> Self {
        Self::launch(backends, nats, extra, false, 1).await
    }

    /// The same with every process, the gateway included, serving HTTPS with a
    /// certificate from a CA made for the test, and trusting only that CA.
    async fn start_over_tls(backends: &Backends, nats: &SharedNats) -> Self {
        Self::launch(backends, nats, &[], true, 1).await
    }

    /// [`Cluster::start`] with `replicas` processes of every module (one gateway),
    /// each module's peers given the list of them.
    async fn start_replicated(
        backends: &Backends,
        nats: &SharedNats,
        extra: &[(&str, &str, &str)],
        replicas: usize,
    ) -> Self {
        Self::launch(backends, nats, extra, false, replicas).await
    }

    async fn launch(
        backends: &Backends,
        nats: &SharedNats,
        extra: &[(&str, &str, &str)],
        tls: bool,
        replicas: usize,
    ) -> Self {
        let database = TestDatabase::create(&backends.database).await;
        let nats_prefix = format!("split{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = tempfile::tempdir().unwrap();
        // As a deployment mounts them: a directory per process with its own private
        // key and every public key.
        let keys = dir.path().join("service-keys");
        chassis::auth::provision_service_keys(&keys, &SPLIT_START_ORDER).unwrap();
        let pki = dir.path().join("tls");
        let scheme = if tls {
            chassis::tls::generate_dev_pki(&pki, &SPLIT_START_ORDER).unwrap();
            "https"
        } else {
            "http"
        };
        let direct = Client::builder()
            .timeout(Duration::from_secs(15))
            .use_preconfigured_tls(
                chassis::tls::client_config(tls.then(|| pki.join("ca.pem")).as_deref()).unwrap(),
            )
            .build()
            .unwrap();
        // Every port up front, all different, so a restarted process comes back where
        // its peers look for it.
        let instances: Vec<(&'static str, usize)> = SPLIT_START_ORDER
            .into_iter()
            .flat_map(|name| {
                let count = if name == "gateway" { 1 } else { replicas };
                (0..count).map(move |replica| (name, replica))
            })
            .collect();
        let mut ports = BTreeSet::new();
        for _ in 0..200 {
            if ports.len() == instances.len() {
                break;
            }
            ports.insert(free_port());
        }
        assert_eq!(ports.len(), instances.len(), "not enough free ports");
        let services: Vec<Service> = instances
            .into_iter()
            .zip(ports)
            .map(|((name, replica), port)| Service {
                name,
                replica,
                port,
                env: extra
                    .iter()
                    .filter(|(module, _, _)| *module == name)
                    .map(|(_, key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .chain([(
                        "BAZAAR_SERVICE_KEYS_DIR".to_owned(),
                        keys.join(name).display().to_string(),
                    )])
                    // A role per module (ADR 0008), provisioned by the process itself
                    // with the administrator's URL the shared environment carries.
                    .chain((name != "gateway").then(|| {
                        (
                            "BAZAAR_DATABASE_URL".to_owned(),
                            testkit::postgres::as_role(
                                &database.url,
                                &testkit::postgres::module_role(name),
                                None,
                            ),
                        )
                    }))
                    .chain(
                        tls.then(|| {
                            [("CERT", "crt"), ("KEY", "key")].map(|(var, ext)| {
                                (
                                    format!("BAZAAR_TLS_{var}_FILE"),
                                    pki.join(format!("{name}.{ext}")).display().to_string(),
                                )
                            })
                        })
                        .into_iter()
                        .flatten(),
                    )
                    .collect(),
                running: None,
                ended: Vec::new(),
            })
            .collect();
        for (module, _, _) in extra {
            assert!(
                SPLIT_START_ORDER.contains(module),
                "no module named {module}"
            );
        }
        let mut env: Vec<(String, String)> = [
            ("BAZAAR_DATABASE_URL", database.url.clone()),
            ("BAZAAR_DATABASE_ADMIN_URL", database.url.clone()),
            ("BAZAAR_DB_MAX_CONNECTIONS", "2".to_owned()),
            ("BAZAAR_NATS_URL", nats.url.clone()),
            ("BAZAAR_NATS_PREFIX", nats_prefix.clone()),
            ("BAZAAR_NATS_STREAM_REPLICAS", nats.replicas.to_string()),
            (
                "BAZAAR_METRICS_TOKEN",
                crate::helpers::METRICS_TOKEN.to_owned(),
            ),
            ("BAZAAR_JWT_SECRET", test_secret()),
            ("BAZAAR_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("BAZAAR_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("BAZAAR_RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("BAZAAR_AUTH_RATE_LIMIT_PER_SECOND", "0".to_owned()),
            (
                "BAZAAR_PASSWORD_HASH_WAIT_MS",
                crate::helpers::HASH_WAIT_MS.to_string(),
            ),
            ("BAZAAR_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        if tls {
            env.push((
                "BAZAAR_TLS_CA_FILE".to_owned(),
                pki.join("ca.pem").display().to_string(),
            ));
        }
        for module in SPLIT_START_ORDER.iter().filter(|m| **m != "gateway") {
            let urls: Vec<String> = services
                .iter()
                .filter(|s| s.name == *module)
                .map(|s| format!("{scheme}://127.0.0.1:{}", s.port))
                .collect();
            env.push((
                format!("BAZAAR_PEER_{}", module.to_uppercase()),
                urls.join(","),
            ));
        }
        let gateway = services.iter().find(|s| s.name == "gateway").unwrap().port;
        let mut cluster = Self {
            services,
            env,
            api: Api {
                address: format!("{scheme}://127.0.0.1:{gateway}"),
                client: direct.clone(),
            },
            nats_url: nats.url.clone(),
            nats_prefix,
            keys,
            scheme,
            direct,
            dir,
            database,
        };
        let instances: Vec<(&'static str, usize)> = cluster
            .services
            .iter()
            .map(|s| (s.name, s.replica))
            .collect();
        for (name, replica) in instances {
            cluster.start_replica(name, replica).await;
        }
        cluster
    }

    fn service(&mut self, name: &str) -> &mut Service {
        self.replica(name, 0)
    }

    fn replica(&mut self, name: &str, replica: usize) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.name == name && s.replica == replica)
            .unwrap_or_else(|| panic!("no replica {replica} of a module named {name}"))
    }

    fn port(&self, name: &str) -> u16 {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no module named {name}"))
            .port
    }

    /// What the process `name` signs its credentials with.
    fn signer(&self, name: &'static str) -> chassis::auth::ServiceKeys {
        chassis::auth::ServiceKeys::from_dir(&self.keys.join(name), name).unwrap()
    }

    /// `path` on the module's own listener (not through the gateway).
    /// Waits (bounded) until each of `ready` answers `/health/ready` with 200 and each
    /// of `unready` with 503 naming its failing `nats` check.
    async fn assert_readiness(&self, ready: &[&str], unready: &[&str]) {
        let expected = ready
            .iter()
            .map(|name| (*name, true))
            .chain(unready.iter().map(|name| (*name, false)));
        for (name, want_ready) in expected {
            let url = self.module_url(name, "/health/ready");
            eventually(&format!("{name} ready: {want_ready}"), || async {
                let response = self
                    .direct
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body: Value = response.json().await.map_err(|e| e.to_string())?;
                let nats_failing = body["checks"]["nats"].as_str().is_some_and(|c| c != "ok");
                match (want_ready, status) {
                    (true, 200) | (false, 503) if want_ready != nats_failing => Ok(()),
                    _ => Err(format!("{status}: {body}")),
                }
            })
            .await;
        }
    }

    fn module_url(&self, name: &str, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port(name))
    }

    /// Starts `name` (again) on its port and waits (bounded) until it is ready.
    async fn start_service(&mut self, name: &str) {
        self.start_replica(name, 0).await;
    }

    /// Starts replica `replica` of `name` (again) on its port and waits (bounded)
    /// until it is ready.
    async fn start_replica(&mut self, name: &str, replica: usize) {
        let data_dir = self.dir.path().join(format!("{name}-{replica}"));
        let env = self.env.clone();
        let (scheme, client) = (self.scheme, self.direct.clone());
        let service = self.replica(name, replica);
        assert!(service.running.is_none(), "{name} is already running");
        let mut command = bazaar(&["serve", "--only", name]);
        command
            .envs(env)
            .env("BAZAAR_HTTP_ADDR", format!("127.0.0.1:{}", service.port))
            .env("BAZAAR_DATA_DIR", data_dir)
            .envs(service.env.clone());
        let ready = format!("{scheme}://127.0.0.1:{}/health/ready", service.port);
        service.running = Some(Proc::spawn(command));
        eventually_within(&format!("{name} to be ready"), STARTUP, || {
            let service = self.replica(name, replica);
            let proc = service.running.as_mut().unwrap();
            if let Some(status) = proc.child.try_wait().unwrap() {
                let mut proc = service.running.take().unwrap();
                proc.wait(EXIT);
                service
                    .ended
                    .push((format!("exited while starting: {status}"), proc));
                panic!("{name} exited while starting ({status}); its output is below");
            }
            testkit::answers_ok(&client, &ready)
        })
        .await;
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    async fn stop_service(&mut self, name: &str) {
        let service = self.service(name);
        let mut proc = service
            .running
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        let pid = Pid::from_raw(i32::try_from(proc.child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let outcome = wait_exit(&mut proc, EXIT).await;
        let how = format!("stopped (SIGTERM): {outcome:?}");
        service.ended.push((how, proc));
        match outcome {
            Ok(status) => assert!(status.success(), "{name} exited {status} on SIGTERM"),
            Err(e) => panic!("{name} {e} after SIGTERM"),
        }
    }

    /// SIGKILL: no shutdown at all.
    async fn kill_service(&mut self, name: &str) {
        self.kill_replica(name, 0).await;
    }

    /// SIGKILL of one replica of `name`.
    async fn kill_replica(&mut self, name: &str, replica: usize) {
        let service = self.replica(name, replica);
        let mut proc = service
            .running
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        proc.child.kill().unwrap();
        let outcome = wait_exit(&mut proc, EXIT).await;
        service
            .ended
            .push((format!("killed (SIGKILL): {outcome:?}"), proc));
        outcome.unwrap_or_else(|e| panic!("{name} {e} after SIGKILL"));
    }

    /// Stops `name` gracefully and starts it again on the same port.
    #[allow(dead_code)]
    async fn restart_service(&mut self, name: &str) {
        self.stop_service(name).await;
        self.start_service(name).await;
    }

    /// `bazaar audit` over every module's schema: `Err` with its report when it finds
    /// a violation.
    async fn audit(&self) -> Result<(), String> {
        let mut command = bazaar(&["audit"]);
        command
            .env("BAZAAR_DATABASE_URL", &self.database.url)
            .env("BAZAAR_DB_MAX_CONNECTIONS", "1")
            .env("BAZAAR_DATA_DIR", self.dir.path().join("audit"));
        let output = tokio::task::spawn_blocking(move || Proc::run(command))
            .await
            .unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "bazaar audit: {}\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Waits (bounded) until `bazaar audit` passes: events still on their way show up
    /// as differences until they are delivered.
    async fn assert_audit_clean(&self) {
        eventually("bazaar audit to pass", || self.audit()).await;
    }

    /// The payments ledger per order: (capture entries, captured cents, refunded
    /// cents).
    /// Every order of `tokens`' buyers, waited to a terminal state (those whose answer
    /// was lost included), at least `accepted` of them, and the payments ledger: no
    /// order is charged twice, a confirmed one is charged its total and any other one
    /// nothing (net).
    async fn settled_orders(
        &self,
        api: &Api,
        tokens: &[String],
        accepted: usize,
    ) -> (Vec<Value>, BTreeMap<String, (i64, i64, i64)>) {
        let mut orders = Vec::new();
        for token in tokens {
            for order in api.my_orders_one_page(token).await {
                orders.push(api.wait_until_terminal(token, &id_of(&order)).await);
            }
        }
        assert!(
            orders.len() >= accepted,
            "{} orders listed, {accepted} accepted",
            orders.len()
        );
        let ledger = self.ledger().await;
        for order in &orders {
            let id = id_of(order);
            let (captures, captured, refunded) = ledger.get(&id).copied().unwrap_or((0, 0, 0));
            assert!(captures <= 1, "order {id} captured {captures} times");
            let expected = if order["status"] == "confirmed" {
                order["total_cents"].as_i64().unwrap()
            } else {
                0
            };
            assert_eq!(captured - refunded, expected, "order {id}: {order}");
        }
        (orders, ledger)
    }

    async fn ledger(&self) -> BTreeMap<String, (i64, i64, i64)> {
        let store = chassis::store::Store::open_postgres(&self.database.url, "payments", 1)
            .await
            .expect("the payments schema opens");
        // SUM over BIGINT is NUMERIC on PostgreSQL: cast back.
        let rows: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT order_id, COUNT(CASE WHEN kind = 'capture' THEN 1 END), \
                    CAST(SUM(CASE WHEN kind = 'capture' THEN amount_cents ELSE 0 END) AS BIGINT), \
                    CAST(SUM(CASE WHEN kind = 'refund' THEN amount_cents ELSE 0 END) AS BIGINT) \
             FROM ledger GROUP BY order_id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        store.close().await;
        rows.into_iter()
            .map(|(order, captures, captured, refunded)| {
                (
                    order,
                    (captures, captured.unwrap_or(0), refunded.unwrap_or(0)),
                )
            })
            .collect()
    }

    /// Every process's output so far, incarnation by incarnation: stderr whole, the
    /// JSON log's warnings and errors and its last lines.
    fn print_logs(&self) {
        for service in &self.services {
            let incarnations = service
                .ended
                .iter()
                .map(|(how, proc)| (how.as_str(), proc))
                .chain(service.running.iter().map(|proc| ("running", proc)));
            for (n, (how, proc)) in incarnations.enumerate() {
                eprintln!(
                    "===== {} #{} (port {}), start #{}: {how} =====",
                    service.name,
                    service.replica,
                    service.port,
                    n + 1
                );
                eprintln!("--- stderr ---\n{}", proc.stderr());
                let stdout = proc.stdout();
                let warnings: Vec<&String> = stdout
                    .iter()
                    .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
                    .collect();
                eprintln!(
                    "--- log: {} lines, {} warnings/errors (last {LOG_WARNINGS}) ---",
                    stdout.len(),
                    warnings.len()
                );
                for line in &warnings[warnings.len().saturating_sub(LOG_WARNINGS)..] {
                    eprintln!("{line}");
                }
                eprintln!("--- log: last {LOG_TAIL} lines ---");
                for line in &stdout[stdout.len().saturating_sub(LOG_TAIL)..] {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// Deletes this deployment's JetStream streams (best effort, bounded).
    fn delete_streams(&self) {
        delete_streams(&self.nats_url, &self.nats_prefix);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Every process ends before its database is dropped (a field, dropped after
        // this).
        for service in &mut self.services {
            if let Some(mut proc) = service.running.take() {
                let _ = proc.child.kill();
                let status = proc.wait(EXIT);
                service
                    .ended
                    .push((format!("killed at the end of the test: {status}"), proc));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "the split test failed; data under {}, database {}",
                self.dir.path().display(),
                self.database.url
            );
            self.print_logs();
        }
        self.delete_streams();
    }
}

// ---- The public API through the gateway ----

// What only these tests ask of the API (the rest is `helpers::Api`'s): inherent
// methods of the same crate's `Api`, visible to this module.
impl Api {
    /// Registers `n` customers at once; their tokens.
    async fn register_many(&self, tag: &str, n: usize) -> Vec<String> {
        join_all(
            (0..n).map(|i| async move { self.register(&format!("{tag}{i}@example.com")).await.0 }),
        )
        .await
    }

    /// The first `n` products of the catalog: the page must answer 200 and hold
    /// exactly `n` (unlike `Api::products`, which checks neither).
    async fn products_exactly(&self, n: u32) -> Vec<Value> {
        let body = self
            .get_json(&format!("/api/v1/products?limit={n}"), None)
            .await;
        let items = body["items"].as_array().expect("items is an array").clone();
        assert_eq!(items.len(), n as usize, "{body}");
        items
    }

    async fn cart(&self, token: &str) -> Value {
        self.get_json("/api/v1/cart", Some(token)).await
    }

    /// The caller's orders, which must fit one page (a buyer here never has more;
    /// unlike `Api::my_orders`, which does not check).
    async fn my_orders_one_page(&self, token: &str) -> Vec<Value> {
        let body = self.get_json("/api/v1/orders?limit=100", Some(token)).await;
        let items = body["items"].as_array().expect("items is an array").clone();
        assert!(body["next_cursor"].is_null(), "more than a page: {body}");
        items
    }

    /// The sales report.
    async fn sales(&self, admin: &str) -> Value {
        self.get_json("/api/v1/admin/analytics/sales", Some(admin))
            .await
    }

    /// The dead letters of every module (events a consumer gave up on).
    async fn dead_letters(&self, admin: &str) -> Value {
        self.get_json("/api/v1/admin/dead-letters", Some(admin))
            .await["items"]
            .clone()
    }

    /// `Ok` once the order emails are exactly one `order_confirmed` for each of
    /// `confirmed` and one `order_failed` for each of `failed`; else what differs, and
    /// the dead letters (an email given up on shows there).
    async fn emails_settled(
        &self,
        admin: &str,
        confirmed: &[String],
        failed: &[String],
    ) -> Result<(), String> {
        match check_order_emails(&self.order_emails(admin).await, confirmed, failed) {
            Ok(()) => Ok(()),
            Err(differences) => Err(format!(
                "{differences}; dead letters: {}",
                self.dead_letters(admin).await
            )),
        }
    }

    /// Every order email sent: order id -> the kinds of its emails, one entry per
    /// email.
    async fn order_emails(&self, admin: &str) -> BTreeMap<String, Vec<String>> {
        let mut emails: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let path = match &cursor {
                Some(c) => format!("/api/v1/admin/notifications?limit=100&cursor={c}"),
                None => "/api/v1/admin/notifications?limit=100".to_owned(),
            };
            let page = self.get_json(&path, Some(admin)).await;
            for email in page["items"].as_array().expect("items is an array") {
                if let (Some(kind), Some(order)) =
                    (email["kind"].as_str(), email["order_id"].as_str())
                {
                    emails
                        .entry(order.to_owned())
                        .or_default()
                        .push(kind.to_owned());
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return emails,
            }
        }
        panic!("the notifications list did not end after 100 pages");
    }
}

/// `Ok` when `emails` holds exactly one `order_confirmed` email for each of
/// `confirmed`, and one `order_failed` for each of `failed`, and nothing else.
fn check_order_emails(
    emails: &BTreeMap<String, Vec<String>>,
    confirmed: &[String],
    failed: &[String],
) -> Result<(), String> {
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in confirmed {
        expected.insert(id.clone(), vec!["order_confirmed".to_owned()]);
    }
    for id in failed {
        expected.insert(id.clone(), vec!["order_failed".to_owned()]);
    }
    if *emails == expected {
        Ok(())
    } else {
        let wrong: Vec<String> = expected
            .keys()
            .chain(emails.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| emails.get(*id) != expected.get(*id))
            .map(|id| {
                format!(
                    "{id}: sent {:?}, expected {:?}",
                    emails.get(id),
                    expected.get(id)
                )
            })
            .collect();
        Err(format!(
            "{} orders emailed, {} expected; differences: {wrong:?}",
            emails.len(),
            expected.len()
        ))
    }
}

/// Waits (up to `patience`) until the sales report counts `confirmed` orders for
/// `revenue` cents.
async fn wait_for_sales(
    api: &Api,
    admin: &str,
    patience: Duration,
    confirmed: usize,
    revenue: i64,
) {
    let what = format!("{confirmed} confirmations in the sales report");
    eventually_within(&what, patience, || async {
        let report = api.sales(admin).await;
        if report["orders_confirmed"] == confirmed && report["revenue_cents"] == revenue {
            Ok(())
        } else {
            Err(report.to_string())
        }
    })
    .await;
}

/// The sum of the orders' `total_cents`.
fn revenue(orders: &[Value]) -> i64 {
    orders
        .iter()
        .map(|o| {
            o["total_cents"]
                .as_i64()
                .expect("total_cents is an integer")
        })
        .sum()
}

// ---- The tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_one_trace_across_every_hop_in_logs_and_the_traces_api() {
    let Some(backends) = backends("split_one_trace_across_every_hop_in_logs_and_the_traces_api")
    else {
        return;
    };
    // Request and event handling lines are debug level.
    let logs = "info,chassis=debug,tower_http=debug";
    let extra: Vec<(&str, &str, &str)> = SPLIT_START_ORDER
        .iter()
        .map(|module| (*module, "RUST_LOG", logs))
        .collect();
    let cluster = Cluster::start(&backends, &backends.nats, &extra).await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let trace_id = crate::traces::new_trace_id();
    crate::traces::traced_checkout(&api, "split", &trace_id).await;
    let services = crate::traces::checkout_services(true);
    crate::traces::assert_trace(&api, &admin, &trace_id, &services).await;

    // Each process logged inside its spans of the trace, with their span ids. (A span
    // reaches the traces API when it ends, after its lines: hence the patience.)
    let logs_of = |name: &str| -> Vec<Value> {
        let proc = cluster
            .services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.running.as_ref())
            .unwrap_or_else(|| panic!("{name} is not running"));
        proc.stdout()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["trace_id"] == trace_id.as_str())
            .collect()
    };
    let path = format!("/api/v1/admin/traces/{trace_id}");
    eventually(
        "every process's log lines in spans of the trace",
        || async {
            let trace = api.get_json(&path, Some(&admin)).await;
            let spans: BTreeSet<&str> = trace["spans"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["span_id"].as_str())
                .collect();
            for name in &services {
                let lines = logs_of(name);
                if lines.is_empty() {
                    return Err(format!("{name} logged nothing of trace {trace_id}"));
                }
                for line in &lines {
                    assert_eq!(line["service"], *name, "{line}");
                    let span_id = line["span_id"].as_str().unwrap_or_default();
                    if !spans.contains(span_id) {
                        return Err(format!(
                            "{name} logged in span {span_id}, not (yet) in the trace: {line}"
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_purchase_flow_oversell_and_idempotency() {
    let Some(backends) = backends("split_purchase_flow_oversell_and_idempotency") else {
        return;
    };
    let cluster = Cluster::start(&backends, &backends.nats, &[]).await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let mut confirmed_orders: Vec<Value> = Vec::new();

    // One purchase end to end: browse, cart, checkout, the cart emptied by the
    // OrderConfirmed event, the email sent, the sale counted.
    let (token, user) = api.register("split-buyer@example.com").await;
    let me = api.get_json("/api/v1/me", Some(&token)).await;
    assert_eq!(me["id"], user.as_str(), "{me}");
    let products = api.products_exactly(3).await;
    let product = id_of(&products[0]);
    let price = products[0]["price_cents"].as_i64().unwrap();
    let read = api
        .get_json(&format!("/api/v1/products/{product}"), None)
        .await;
    assert_eq!(read["id"], product.as_str(), "{read}");
    let stock_before = api.stock(&product).await;
    assert!(stock_before >= 2, "{read}");
    let cart = api.add_to_cart(&token, &product, 2).await;
    assert_eq!(cart["total_cents"], price * 2, "{cart}");
    let response = api
        .try_place_order(&token, &cart_order_body("tok_visa"), None)
        .await
        .unwrap();
    let status = response.status();
    let order: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["total_cents"], price * 2, "{order}");
    let first = id_of(&order);
    eventually("the cart to empty after OrderConfirmed", || async {
        let cart = api.cart(&token).await;
        if cart["items"] == json!([]) && cart["total_cents"] == 0 {
            Ok(())
        } else {
            Err(cart.to_string())
        }
    })
    .await;
    eventually("the confirmation email", || async {
        api.emails_settled(&admin, std::slice::from_ref(&first), &[])
            .await
    })
    .await;
    confirmed_orders.push(order);
    wait_for_sales(&api, &admin, PATIENCE, 1, revenue(&confirmed_orders)).await;
    assert_eq!(
        cluster.ledger().await.get(&first),
        Some(&(1, price * 2, 0)),
        "one charge of the total"
    );
    eventually("the stock taken once", || async {
        match api.stock(&product).await {
            stock if stock == stock_before - 2 => Ok(()),
            stock => Err(format!("stock {stock}, was {stock_before}")),
        }
    })
    .await;

    // 40 buyers at once for 20 units: 20 confirmed, 20 out of stock, none oversold.
    let scarce = id_of(&products[1]);
    api.set_stock(&admin, &scarce, 20).await;
    let tokens = api.register_many("split-rush", 40).await;
    let body = order_body(&[(&scarce, 1)], "tok_visa");
    let placed = join_all(tokens.iter().map(|token| api.place_ok(token, &body))).await;
    let mut failed_ids = Vec::new();
    for (token, (_, order)) in tokens.iter().zip(&placed) {
        let order = api.wait_until_terminal(token, &id_of(order)).await;
        match (order["status"].as_str(), order["failure_reason"].as_str()) {
            (Some("confirmed"), None) => confirmed_orders.push(order),
            (Some("failed"), Some("out_of_stock")) => failed_ids.push(id_of(&order)),
            _ => panic!("unexpected outcome: {order}"),
        }
    }
    assert_eq!(
        (confirmed_orders.len() - 1, failed_ids.len()),
        (20, 20),
        "confirmed and out of stock"
    );
    eventually("the scarce product sold out", || async {
        match api.stock(&scarce).await {
            0 => Ok(()),
            stock => Err(format!("stock {stock}")),
        }
    })
    .await;

    // Ten concurrent requests with one Idempotency-Key: one order, one charge.
    let (idem, _) = api.register("split-idem@example.com").await;
    let (other, other_price) = (
        id_of(&products[2]),
        products[2]["price_cents"].as_i64().unwrap(),
    );
    let body = order_body(&[(&other, 1)], "tok_visa");
    let key = "split-checkout-7c2e";
    let responses = join_all((0..10).map(|_| async {
        let response = api.try_place_order(&idem, &body, Some(key)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }))
    .await;
    let accepted = accepted_repeats(&responses);
    assert!(!accepted.is_empty(), "nothing accepted: {responses:?}");
    for answer in &accepted {
        assert_eq!(answer, &accepted[0], "repeats differ: {responses:?}");
    }
    let id = id_of(&accepted[0].1);
    let mine = api.my_orders_one_page(&idem).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], id.as_str());
    let order = api.wait_until_terminal(&idem, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(
        cluster.ledger().await.get(&id),
        Some(&(1, other_price, 0)),
        "one charge for the idempotent order"
    );
    confirmed_orders.push(order);

    // Once every event has reached its consumers: one email per outcome, each
    // confirmation counted once, and the stores pass the audit.
    let confirmed_ids: Vec<String> = confirmed_orders.iter().map(id_of).collect();
    wait_for_sales(
        &api,
        &admin,
        PATIENCE,
        confirmed_orders.len(),
        revenue(&confirmed_orders),
    )
    .await;
    eventually("one email per order outcome", || async {
        api.emails_settled(&admin, &confirmed_ids, &failed_ids)
            .await
    })
    .await;
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_failure_isolation_notifications_down() {
    const N: usize = 5;
    let Some(backends) = backends("split_failure_isolation_notifications_down") else {
        return;
    };
    let mut cluster = Cluster::start(&backends, &backends.nats, &[]).await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let tokens = api.register_many("split-isolated", N).await;
    let products = api.products_exactly(2).await;
    let product = id_of(&products[0]);
    // Every buyer is known to notifications before it goes down (their welcome emails
    // are out): what it catches up on afterwards is the orders alone, not a race
    // between the identity and orders streams, which another test covers.
    eventually("a welcome email per buyer", || async {
        let sent = api
            .get_json("/api/v1/admin/notifications?limit=100", Some(&admin))
            .await;
        let welcomed = sent["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|n| {
                    n["kind"] == "welcome"
                        && n["to"]
                            .as_str()
                            .is_some_and(|to| to.contains("split-isolated"))
                })
                .count()
        });
        if welcomed >= N {
            Ok(())
        } else {
            Err(format!("{welcomed} of {N} buyers welcomed"))
        }
    })
    .await;

    cluster.stop_service("notifications").await;

    // Checkout needs no email: every order confirms. Browsing and the cart work.
    let body = order_body(&[(&product, 1)], "tok_visa");
    let mut confirmed = Vec::new();
    for token in &tokens {
        let (_, order) = api.place_ok(token, &body).await;
        let order = api.wait_until_terminal(token, &id_of(&order)).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        confirmed.push(id_of(&order));
    }
    let listed = api.get_json("/api/v1/products?limit=5", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 5, "{listed}");
    let other = id_of(&products[1]);
    let cart = api.add_to_cart(&tokens[0], &other, 1).await;
    assert_eq!(cart["items"][0]["product_id"], other.as_str(), "{cart}");
    assert_eq!(api.cart(&tokens[0]).await, cart);
    // Only what depends on notifications is unavailable.
    let response = api.get("/api/v1/admin/notifications", Some(&admin)).await;
    assert!(
        response.status().is_server_error(),
        "notifications is down, yet: {}",
        response.status()
    );

    // Back up, it works through what it missed: one email per order, no more.
    cluster.start_service("notifications").await;
    // A message the stopped process held unacknowledged comes back after JetStream's
    // ack_wait (30 s): patience beyond that.
    eventually_within(
        "one confirmation email per order",
        Duration::from_secs(90),
        || async { api.emails_settled(&admin, &confirmed, &[]).await },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_order_emails(&api.order_emails(&admin).await, &confirmed, &[])
        .expect("no duplicate email after a further wait");
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");
}

/// What the client tasks of a checkout stream saw.
#[derive(Default)]
struct Stream {
    accepted: AtomicUsize,
    errors: AtomicUsize,
    stop: AtomicBool,
    /// Each error once, for the report.
    seen: Mutex<BTreeSet<String>>,
}

impl Stream {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().insert(what);
    }

    /// One task per buyer placing orders for one `product` until `stop` (at most
    /// `attempts` each): accepted ones are counted, server errors and missing answers
    /// noted; any other answer fails the test.
    fn checkouts(
        self: &Arc<Self>,
        api: &Api,
        tokens: &[String],
        product: &str,
        attempts: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        tokens
            .iter()
            .map(|token| {
                let (api, token, stream) = (api.clone(), token.clone(), Arc::clone(self));
                let body = order_body(&[(product, 1)], "tok_visa");
                tokio::spawn(async move {
                    for _ in 0..attempts {
                        if stream.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match api.try_place_order(&token, &body, None).await {
                            Ok(response) if matches!(response.status().as_u16(), 201 | 202) => {
                                stream.accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let text = response.text().await.unwrap_or_default();
                                assert!(
                                    status >= 500,
                                    "a checkout answered {status} (not a server error): {text}"
                                );
                                stream.error(format!("{status}"));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => {
                                stream.error(format!("no answer: {e}"));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                })
            })
            .collect()
    }

    /// For `eventually`: at least `n` checkouts accepted.
    fn accepted_at_least(
        self: &Arc<Self>,
        n: usize,
    ) -> impl FnMut() -> futures::future::BoxFuture<'static, Result<(), String>> {
        let stream = Arc::clone(self);
        move || {
            let stream = Arc::clone(&stream);
            Box::pin(async move {
                let accepted = stream.accepted.load(Ordering::SeqCst);
                if accepted >= n {
                    Ok(())
                } else {
                    Err(format!("{accepted} accepted"))
                }
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_kill_orders_mid_checkout() {
    const BUYERS: usize = 4;
    /// Attempts per buyer at most: the stream is bounded even if the stop never comes.
    const ATTEMPTS: usize = 60;
    let Some(backends) = backends("split_kill_orders_mid_checkout") else {
        return;
    };
    let mut cluster = Cluster::start(
        &backends,
        &backends.nats,
        &[("payments", "BAZAAR_PAYMENT_PROVIDER_LATENCY_MS", "20")],
    )
    .await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let product = id_of(&api.products_exactly(1).await[0]);
    api.set_stock(&admin, &product, 10_000).await;
    let tokens = api.register_many("split-crash", BUYERS).await;

    let stream = Arc::new(Stream::default());
    let clients = stream.checkouts(&api, &tokens, &product, ATTEMPTS);
    let accepted_at_least = |n| stream.accepted_at_least(n);
    eventually("8 checkouts accepted", accepted_at_least(8)).await;
    cluster.kill_service("orders").await;
    let accepted_at_kill = stream.accepted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.start_service("orders").await;
    eventually(
        "4 more checkouts accepted after the restart",
        accepted_at_least(stream.accepted.load(Ordering::SeqCst) + 4),
    )
    .await;
    stream.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    eprintln!(
        "kill -9 orders after {accepted_at_kill} accepted checkouts; {} accepted in all, {} \
         errors absorbed: {:?}",
        stream.accepted.load(Ordering::SeqCst),
        stream.errors.load(Ordering::SeqCst),
        stream.seen.lock().unwrap()
    );

    let (orders, ledger) = cluster
        .settled_orders(&api, &tokens, stream.accepted.load(Ordering::SeqCst))
        .await;
    assert!(
        ledger
            .keys()
            .all(|id| orders.iter().any(|o| o["id"] == id.as_str())),
        "a payment for an order nobody has"
    );
    let statuses: BTreeMap<String, usize> = orders.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        m
    });
    eprintln!("order outcomes: {statuses:?}");
    // The stock is taken once per confirmed order, and given back for any other.
    let sold = i64::try_from(statuses.get("confirmed").copied().unwrap_or(0)).unwrap();
    eventually("the stock to match the confirmed orders", || async {
        match api.stock(&product).await {
            stock if stock == 10_000 - sold => Ok(()),
            stock => Err(format!("stock {stock}, {sold} sold of 10000")),
        }
    })
    .await;
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_nats_restart_loses_nothing() {
    const TEST: &str = "split_nats_restart_loses_nothing";
    const BUYERS: usize = 16;
    let Some(backends) = backends(TEST) else {
        return;
    };
    // A JetStream cluster of the test's own, R3 streams: one node lost, then all three.
    let Some(mut nats) = NatsCluster::started(TEST).await else {
        return;
    };
    let shared = SharedNats {
        url: nats.url(),
        replicas: u8::try_from(CLUSTER_NODES).unwrap(),
    };
    // Declared after the NATS cluster: dropped (its streams deleted) while it still runs.
    let cluster = Cluster::start(&backends, &shared, &[]).await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let product = id_of(&api.products_exactly(1).await[0]);
    api.set_stock(&admin, &product, 10_000).await;
    let tokens = api.register_many("split-nats", BUYERS).await;

    // A stream of checkouts from the cart, two at a time, each buyer once.
    let next = Arc::new(AtomicUsize::new(0));
    let placed: Arc<Mutex<Vec<(String, Value)>>> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (api, tokens, product) = (api.clone(), tokens.clone(), product.clone());
            let (next, placed) = (Arc::clone(&next), Arc::clone(&placed));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(token) = tokens.get(i) else { break };
                    api.add_to_cart(token, &product, 1).await;
                    let (_, order) = api.place_ok(token, &cart_order_body("tok_visa")).await;
                    placed.lock().unwrap().push((token.clone(), order));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let placed_at_least = |n: usize| {
        let placed = Arc::clone(&placed);
        move || {
            let placed = Arc::clone(&placed);
            async move {
                let count = placed.lock().unwrap().len();
                if count >= n {
                    Ok(count)
                } else {
                    Err(format!("{count} placed"))
                }
            }
        }
    };

    eventually("4 checkouts before the outage", placed_at_least(4)).await;
    // One node of three down: the streams keep a quorum, checkouts go on.
    nats.kill_node(0);
    let at_node_kill = placed.lock().unwrap().len();
    eventually(
        "4 checkouts with a NATS node down",
        placed_at_least((at_node_kill + 4).min(BUYERS)),
    )
    .await;
    nats.start_node(0).await;
    cluster.assert_readiness(&SPLIT_START_ORDER, &[]).await;
    nats.kill();
    let at_kill = placed.lock().unwrap().len();
    // Orders keep confirming over HTTP while the events wait in the outboxes.
    let during = eventually(
        "4 checkouts while NATS is down",
        placed_at_least((at_kill + 4).min(BUYERS)),
    )
    .await;
    // Every module is unready without its NATS connection; the gateway, which needs
    // none, stays ready (no cascade from the modules behind it).
    let modules: Vec<&str> = SPLIT_START_ORDER[..SPLIT_START_ORDER.len() - 1].to_vec();
    cluster.assert_readiness(&["gateway"], &modules).await;
    nats.start().await;
    cluster.assert_readiness(&SPLIT_START_ORDER, &[]).await;
    for worker in workers {
        worker.await.unwrap();
    }
    let placed: Vec<(String, Value)> = placed.lock().unwrap().clone();
    assert_eq!(placed.len(), BUYERS);
    eprintln!(
        "a NATS node killed after {at_node_kill} checkouts, the whole cluster after \
         {at_kill}, restarted after {during}, {} in all",
        placed.len()
    );

    let mut confirmed = Vec::new();
    for (token, order) in &placed {
        let order = api.wait_until_terminal(token, &id_of(order)).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        confirmed.push(order);
    }
    let confirmed_ids: Vec<String> = confirmed.iter().map(id_of).collect();
    eventually_within("one confirmation email per order", REDELIVERY, || async {
        api.emails_settled(&admin, &confirmed_ids, &[]).await
    })
    .await;
    wait_for_sales(
        &api,
        &admin,
        REDELIVERY,
        confirmed.len(),
        revenue(&confirmed),
    )
    .await;
    eventually_within("every cart emptied", REDELIVERY, || async {
        for token in &tokens {
            let cart = api.cart(token).await;
            if cart["items"] != json!([]) {
                return Err(cart.to_string());
            }
        }
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_order_emails(&api.order_emails(&admin).await, &confirmed_ids, &[])
        .expect("no duplicate email after a further wait");
    assert_eq!(
        api.sales(&admin).await["orders_confirmed"],
        confirmed.len(),
        "each confirmation counted once"
    );
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_internal_routes_need_a_credential_and_are_not_public() {
    const PATH: &str = "/internal/v1/catalog/get_product";
    let Some(backends) = backends("split_internal_routes_need_a_credential_and_are_not_public")
    else {
        return;
    };
    let cluster = Cluster::start(&backends, &backends.nats, &[]).await;
    let api = cluster.api.clone();
    let product = id_of(&api.products_exactly(1).await[0]);
    let args = json!({"id": product});
    let direct = cluster.module_url("catalog", PATH);
    let client = crate::helpers::client();

    // No credential at all.
    let response = client.post(&direct).json(&args).send().await.unwrap();
    assert_problem(response, 401).await;
    // A user's token is not a service credential.
    let (token, _) = api.register("split-internal@example.com").await;
    let response = client
        .post(&direct)
        .bearer_auth(&token)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;
    // Nor is a credential signed with another secret.
    let forged = chassis::auth::ServiceKeys::new(test_secret().as_bytes(), "orders")
        .credential("catalog")
        .unwrap();
    let response = client
        .post(&direct)
        .bearer_auth(&forged)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;
    // The gateway does not route internal paths, credential or not.
    let credential = cluster.signer("orders").credential("catalog").unwrap();
    for bearer in [None, Some(&token), Some(&credential)] {
        let mut request = client.post(api.url(PATH)).json(&args);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        assert_problem(request.send().await.unwrap(), 404).await;
    }
    // The deployment's service credential is let in.
    let response = client
        .post(&direct)
        .bearer_auth(&credential)
        .json(&args)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"]["id"], product.as_str(), "{body}");
}

/// The split over TLS (issue 14, finding 5): every process serves HTTPS with a
/// certificate from the deployment's CA and trusts only that CA for its peers; a
/// checkout crosses every hop; plain HTTP and an untrusting client get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_runs_over_tls_between_every_process() {
    let Some(backends) = backends("split_runs_over_tls_between_every_process") else {
        return;
    };
    let cluster = Cluster::start_over_tls(&backends, &backends.nats).await;
    let api = cluster.api.clone();
    assert!(api.address.starts_with("https://"), "{}", api.address);
    crate::metrics::drive_checkouts(&api, "split-tls").await;

    for name in SPLIT_START_ORDER {
        let ready = cluster.module_url(name, "/health/ready");
        let response = cluster.direct.get(&ready).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name} over TLS");
        let plain = ready.replacen("https://", "http://", 1);
        assert!(
            crate::helpers::client().get(&plain).send().await.is_err(),
            "{name} answered plain HTTP"
        );
    }
    let untrusting = Client::builder()
        .use_preconfigured_tls(chassis::tls::client_config(None).unwrap())
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(cluster.module_url("catalog", "/health/ready"))
            .send()
            .await
            .is_err(),
        "a client without the deployment's CA trusted catalog's certificate"
    );
}

/// Least privilege between the processes (issue 14, finding 5): a credential is good
/// against the module it names only, a module takes calls only from the modules the
/// registry lists as its callers, and only the gateway may say who the end user is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_internal_calls_are_least_privilege() {
    use chassis::auth::{IDENTITY_HEADER, Principal, Role, ServiceKeys};
    const PAYMENTS: &str = "/internal/v1/payments/get";
    let Some(backends) = backends("split_internal_calls_are_least_privilege") else {
        return;
    };
    let cluster = Cluster::start(&backends, &backends.nats, &[]).await;

    // In the database too: each module is a role of its own (ADR 0008), owning its
    // schema; catalog's role can neither read nor write orders' tables, orders' can.
    let as_module = |module: &str| {
        testkit::postgres::as_role(
            &cluster.database.url,
            &testkit::postgres::module_role(module),
            None,
        )
    };
    sqlx::any::install_default_drivers();
    let mut catalog = sqlx::AnyConnection::connect(&as_module("catalog"))
        .await
        .unwrap();
    for sql in [
        "SELECT COUNT(*) FROM orders.outbox",
        "DELETE FROM orders.outbox",
        "CREATE TABLE orders.planted (id TEXT)",
    ] {
        let err = sqlx::query(sql).execute(&mut catalog).await.unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }
    let mut orders = sqlx::AnyConnection::connect(&as_module("orders"))
        .await
        .unwrap();
    sqlx::query("SELECT COUNT(*) FROM orders.outbox")
        .execute(&mut orders)
        .await
        .unwrap();

    let client = crate::helpers::client();
    let payments = cluster.module_url("payments", PAYMENTS);
    let args = json!({"payment_id": "no-such-payment"});
    let call = |service: &'static str, audience: &'static str| {
        let credential = cluster.signer(service).credential(audience).unwrap();
        client
            .post(&payments)
            .bearer_auth(credential)
            .json(&args)
            .send()
    };

    // cart's credential for catalog is no good against payments (wrong audience).
    assert_problem(call("cart", "catalog").await.unwrap(), 401).await;
    // analytics is no caller of payments: a valid credential, refused.
    assert_problem(call("analytics", "payments").await.unwrap(), 403).await;
    // orders is: let in (the payment does not exist, a contract answer).
    let response = call("orders", "payments").await.unwrap();
    assert_eq!(response.status(), 422, "{}", response.text().await.unwrap());
    // Each process holds only its own private key: analytics signing a credential
    // that says it is orders is refused, checked against orders' public key.
    let posing = tempfile::tempdir().unwrap();
    std::fs::copy(
        cluster.keys.join("analytics").join("analytics.key"),
        posing.path().join("orders.key"),
    )
    .unwrap();
    let as_orders = ServiceKeys::from_dir(posing.path(), "orders").unwrap();
    let credential = as_orders.credential("payments").unwrap();
    let response = client
        .post(&payments)
        .bearer_auth(credential)
        .json(&args)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;

    // A module cannot stand in for the gateway and assert an admin.
    let admin = Principal {
        user_id: "nobody".into(),
        role: Role::Admin,
        session_id: None,
    };
    let bus = cluster.module_url("catalog", "/api/v1/admin/bus");
    let as_admin = |signer: &'static str| {
        let identity = cluster.signer(signer).forward_identity(&admin).unwrap();
        client.get(&bus).header(IDENTITY_HEADER, identity).send()
    };
    assert_problem(as_admin("orders").await.unwrap(), 401).await;
    assert_problem(as_admin("notifications").await.unwrap(), 401).await;
    // Nor with the gateway's name and its own key.
    std::fs::copy(
        cluster.keys.join("catalog").join("catalog.key"),
        posing.path().join("gateway.key"),
    )
    .unwrap();
    let identity = ServiceKeys::from_dir(posing.path(), "gateway")
        .unwrap()
        .forward_identity(&admin)
        .unwrap();
    let response = client
        .get(&bus)
        .header(IDENTITY_HEADER, identity)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;
    // The gateway's word is taken (the same request, signed by the edge).
    let response = as_admin("gateway").await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Every process of a real split deployment is scraped on its own: together they
/// export every metric the alert rules and the dashboard query; each has its build
/// info and start time (the crash-loop alert's input); the gateway names public route
/// templates; and the gateway's `GET /api/v1/admin/bus` gathers every module's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_every_process_exports_what_operators_query() {
    let Some(backends) = backends("split_every_process_exports_what_operators_query") else {
        return;
    };
    let queried = crate::metrics::queried_metrics();
    let cluster = Cluster::start(&backends, &backends.nats, &[]).await;
    let api = cluster.api.clone();
    crate::metrics::drive_checkouts(&api, "split").await;
    crate::metrics::assert_bus_report(&api, &bazaar::registry().names()).await;
    let client = crate::helpers::client();
    let mut scrapes = Vec::new();
    for name in SPLIT_START_ORDER {
        let scrape = testkit::http::text(
            client
                .get(cluster.module_url(name, "/metrics"))
                .bearer_auth(crate::helpers::METRICS_TOKEN),
        )
        .await;
        for series in ["process_start_time_seconds", "bazaar_build_info"] {
            assert!(
                scrape.lines().any(|l| l.starts_with(series)),
                "{name} exports no {series}"
            );
        }
        scrapes.push(scrape);
    }
    let missing = crate::metrics::missing(&queried, &scrapes, true);
    assert!(
        missing.is_empty(),
        "queried by deploy/prometheus or deploy/grafana but exported by no process: {missing:?}"
    );
    let gateway = &scrapes[SPLIT_START_ORDER.len() - 1];
    assert!(
        gateway
            .lines()
            .any(|l| l.starts_with("http_requests_total{")
                && l.contains(r#"route="/api/v1/products/{id}""#)),
        "the gateway labels requests with the public route template"
    );
    assert!(!gateway.contains("{*rest}"), "a catch-all route label");
    // Calls served are counted where they are served.
    let catalog = &scrapes[SPLIT_START_ORDER
        .iter()
        .position(|m| *m == "catalog")
        .unwrap()];
    assert!(
        catalog
            .lines()
            .any(|l| l.starts_with("rpc_server_requests_total{")
                && l.contains(r#"service="catalog""#)
                && l.contains(r#"outcome="ok""#)),
        "catalog counts the calls it serves"
    );
}

#[test]
fn the_settled_emails_check_names_what_differs() {
    let emails: BTreeMap<String, Vec<String>> = [
        ("a".to_owned(), vec!["order_confirmed".to_owned()]),
        (
            "b".to_owned(),
            vec!["order_confirmed".to_owned(), "order_confirmed".to_owned()],
        ),
    ]
    .into_iter()
    .collect();
    assert!(check_order_emails(&emails, &["a".to_owned()], &[]).is_err());
    let err = check_order_emails(&emails, &["a".to_owned(), "b".to_owned()], &[]).unwrap_err();
    assert!(err.contains("b: sent"), "{err}");
    assert!(check_order_emails(&emails, &["a".to_owned()], &["b".to_owned()]).is_err());
    let one: BTreeMap<String, Vec<String>> = [("a".to_owned(), vec!["order_confirmed".to_owned()])]
        .into_iter()
        .collect();
    assert!(check_order_emails(&one, &["a".to_owned()], &[]).is_ok());
}

/// The same deployment with several replicas of every module.
mod replicas;
