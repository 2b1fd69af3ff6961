//! NATS for tests: the shared server `BAZAAR_TEST_NATS_URL` names, a `nats-server -js`
//! of the test's own ([`NatsServer`]), or a 3-node JetStream cluster ([`NatsCluster`]),
//! the test's own or one per test binary ([`shared`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt as _;
use tempfile::TempDir;

/// The environment variable naming a shared NATS server with JetStream.
pub const URL_VAR: &str = "BAZAAR_TEST_NATS_URL";
/// The environment variable naming the `nats-server` binary.
pub const SERVER_VAR: &str = "BAZAAR_TEST_NATS_SERVER";
/// Where the binary is looked for when [`SERVER_VAR`] is unset.
pub const DEFAULT_SERVER: &str = "/usr/sbin/nats-server";
/// Lines of the server's log printed when a test fails.
const LOG_TAIL: usize = 40;

/// Deletes the JetStream streams of a deployment with `prefix` (`<PREFIX>_<SOURCE>`;
/// best effort, bounded). Safe to call from `Drop` inside a runtime, which cannot be
/// blocked on: it runs on a thread with a runtime of its own.
pub fn delete_streams(url: &str, prefix: &str) {
    // Streams are named `<PREFIX>_<SOURCE>`, upper case; test prefixes are plain
    // letters and digits.
    let (url, ours) = (url.to_owned(), format!("{prefix}_").to_ascii_uppercase());
    let deleted = crate::on_own_runtime(move || async move {
        let work = async {
            let client = async_nats::connect(servers(&url))
                .await
                .map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            let names: Vec<_> = js.stream_names().collect().await;
            for name in names.into_iter().flatten().filter(|n| n.starts_with(&ours)) {
                js.delete_stream(&name).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(15), work)
            .await
            .map_err(|_| "timed out".to_owned())?
    });
    if let Err(e) = deleted {
        eprintln!("could not delete the JetStream streams of prefix {prefix}: {e}");
    }
}

/// The servers of a comma-separated NATS URL list, as async-nats takes them (a single
/// string is parsed as one URL).
pub fn servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `BAZAAR_TEST_NATS_URL`, or `None` after saying that `test` is skipped.
pub fn url(test: &str) -> Option<String> {
    let url = crate::env(URL_VAR);
    if url.is_none() {
        crate::skip(test, &format!("{URL_VAR} is not set"));
    }
    url
}

/// The binary [`SERVER_VAR`] names, or [`DEFAULT_SERVER`]; `None` (and a message) when
/// it is not there.
fn binary(test: &str) -> Option<PathBuf> {
    let binary =
        std::env::var_os(SERVER_VAR).map_or_else(|| PathBuf::from(DEFAULT_SERVER), PathBuf::from);
    if binary.is_file() {
        Some(binary)
    } else {
        crate::skip(
            test,
            &format!("no nats-server at {} (set {SERVER_VAR})", binary.display()),
        );
        None
    }
}

/// One nats-server process: how it is started, its client port (kept across restarts)
/// and its log.
struct Process {
    command: Vec<OsString>,
    port: u16,
    log: PathBuf,
    /// Shared for the test binary's lifetime (never dropped): run under a watchdog
    /// that kills the server when this test process exits (its stdin, a pipe from us,
    /// closes), and then deletes this directory (the node's store).
    reaped: Option<PathBuf>,
    child: Option<Child>,
}

/// Kills the server `$@` runs when stdin reaches end of file (the test process holding
/// the pipe's other end exited, however it ended), then deletes `$STORE`.
const WATCHDOG: &str = r#""$@" </dev/null & server=$!; cat >/dev/null; kill -9 "$server"; wait "$server"; rm -rf "$STORE""#;

impl Process {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it, without waiting.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = if let Some(store) = &self.reaped {
            let mut sh = Command::new("sh");
            sh.args(["-c", WATCHDOG, "sh"]).args(&self.command);
            sh.env("STORE", store).stdin(Stdio::piped());
            sh
        } else {
            let mut direct = Command::new(&self.command[0]);
            direct.args(&self.command[1..]).stdin(Stdio::null());
            direct
        };
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.command[0]));
        self.child = Some(child);
    }

    /// Waits (bounded) until it accepts connections.
    async fn listening(&self) {
        let addr = self.address();
        crate::eventually_within("nats-server to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last [`LOG_TAIL`] lines of its log, to stderr.
    fn print_log(&self, name: &str) {
        if let Ok(file) = std::fs::File::open(&self.log) {
            let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
            eprintln!("===== {name} (last {LOG_TAIL} lines) =====");
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// A `nats-server -js` of the test's own on a free loopback port, its store in a temp
/// directory that survives restarts. Killed (SIGKILL) when dropped; its log printed
/// when the test fails.
pub struct NatsServer {
    process: Process,
    _dir: TempDir,
}

impl NatsServer {
    /// Not started yet; `None` (and a message) when the binary is not installed.
    pub fn new(test: &str) -> Option<Self> {
        let binary = binary(test)?;
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let command = [
            binary.into_os_string(),
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string().into(),
            "-sd".into(),
            dir.path().join("jetstream").into_os_string(),
        ];
        Some(Self {
            process: Process {
                command: command.into(),
                port,
                log: dir.path().join("nats-server.log"),
                reaped: None,
                child: None,
            },
            _dir: dir,
        })
    }

    /// [`NatsServer::new`], started.
    pub async fn started(test: &str) -> Option<Self> {
        let mut server = Self::new(test)?;
        server.start().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.process.address())
    }

    /// Starts it and waits (bounded) until it accepts connections.
    pub async fn start(&mut self) {
        self.process.spawn();
        self.process.listening().await;
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            self.process.print_log("nats-server");
        }
    }
}

/// Nodes of a [`NatsCluster`].
pub const CLUSTER_NODES: usize = 3;

/// A JetStream cluster as DESIGN requires it in production: three `nats-server`
/// processes on free loopback ports with routes to each other, file storage in a temp
/// directory that survives restarts, `sync_interval: always` (fsync before every
/// acknowledgement); streams on it are meant to be R3. Needs a nats-server that knows
/// `sync_interval` (2.10 or later): the one [`SERVER_VAR`] names. Killed (SIGKILL) when
/// dropped; every node's log printed when the test fails.
pub struct NatsCluster {
    nodes: Vec<Process>,
    dir: TempDir,
}

impl NatsCluster {
    /// Not started yet; `None` (and a message, or a failure in CI) when [`SERVER_VAR`]
    /// does not name a binary: the system's nats-server may predate `sync_interval`.
    pub fn new(test: &str) -> Option<Self> {
        if crate::env(SERVER_VAR).is_none() {
            crate::skip(
                test,
                &format!("{SERVER_VAR} does not name a nats-server (2.10+) for the cluster"),
            );
            return None;
        }
        let binary = binary(test)?;
        Some(Self::with_binary(&binary, false))
    }

    /// [`NatsCluster::new`], started and ready for R3 streams.
    pub async fn started(test: &str) -> Option<Self> {
        let mut cluster = Self::new(test)?;
        cluster.start().await;
        Some(cluster)
    }

    /// One cluster for every test of this test binary, started by the first to ask;
    /// its nodes die with the test process (tests share it by using stream prefixes of
    /// their own). `None` as [`NatsCluster::new`].
    pub fn shared(test: &str) -> Option<&'static Self> {
        static SHARED: OnceLock<Option<NatsCluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let binary = std::env::var_os(SERVER_VAR).map(PathBuf::from)?;
                let mut cluster = Self::with_binary(&binary, true);
                crate::on_own_runtime(move || async move {
                    cluster.start().await;
                    Ok(cluster)
                })
                .map(Some)
                .unwrap()
            })
            .as_ref()
            .or_else(|| {
                Self::new(test);
                None
            })
    }

    fn with_binary(binary: &std::path::Path, reaped: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = BTreeSet::new();
        while ports.len() < 2 * CLUSTER_NODES {
            ports.insert(crate::free_port());
        }
        let ports: Vec<u16> = ports.into_iter().collect();
        let (client, route) = ports.split_at(CLUSTER_NODES);
        let routes = route
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..CLUSTER_NODES)
            .map(|i| {
                let config = dir.path().join(format!("n{i}.conf"));
                let store = dir.path().join(format!("n{i}"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: n{i}\n\
                         listen: 127.0.0.1:{client}\n\
                         jetstream {{ store_dir: \"{store}\", sync_interval: always }}\n\
                         cluster {{ name: bazaartest, listen: 127.0.0.1:{route}, \
                         routes: [{routes}] }}\n",
                        client = client[i],
                        route = route[i],
                        store = store.display(),
                    ),
                )
                .unwrap();
                Process {
                    command: vec![binary.into(), "-c".into(), config.into_os_string()],
                    port: client[i],
                    log: dir.path().join(format!("n{i}.log")),
                    reaped: reaped.then_some(store),
                    child: None,
                }
            })
            .collect();
        Self { nodes, dir }
    }

    /// Every node's URL, comma-separated (how clients are given a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://{}", node.address()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s URL alone.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://{}", self.nodes[i].address())
    }

    /// Where the nodes keep their configuration, stores and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Starts every node that is not running and waits (bounded) until the cluster
    /// takes an R3 stream.
    pub async fn start(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.child.is_none()) {
            node.spawn();
        }
        for node in &self.nodes {
            node.listening().await;
        }
        self.ready().await;
    }

    /// Starts node `i` again and waits until it accepts connections (it catches up
    /// with its peers on its own).
    pub async fn start_node(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.nodes[i].listening().await;
    }

    /// SIGKILL of node `i`.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// SIGKILL of every node at once.
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Waits (bounded) until an R3 stream can be created, written and deleted: a
    /// metadata leader is elected and every node has joined.
    pub async fn ready(&self) {
        let url = self.url();
        crate::eventually_within(
            "the NATS cluster to take an R3 stream",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let probe = async {
                        let client = async_nats::connect(servers(&url))
                            .await
                            .map_err(|e| e.to_string())?;
                        let js = async_nats::jetstream::new(client);
                        let name = format!("TESTKIT_PROBE_{}", crate::unique());
                        js.create_stream(async_nats::jetstream::stream::Config {
                            name: name.clone(),
                            subjects: vec![format!("testkit.probe.{name}")],
                            num_replicas: CLUSTER_NODES,
                            storage: async_nats::jetstream::stream::StorageType::File,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        let stored = js
                            .publish(format!("testkit.probe.{name}"), "ready".into())
                            .await
                            .map_err(|e| e.to_string())?
                            .await
                            .map_err(|e| e.to_string());
                        js.delete_stream(&name).await.map_err(|e| e.to_string())?;
                        stored.map(drop)
                    };
                    tokio::time::timeout(Duration::from_secs(5), probe)
                        .await
                        .map_err(|_| "timed out".to_owned())?
                }
            },
        )
        .await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.kill();
            if panicking {
                node.print_log(&format!("nats-server node n{i}"));
            }
        }
    }
}

/// The NATS a suite's tests share: the test binary's [`NatsCluster`] when
/// [`SERVER_VAR`] names a binary (as in CI), else the server [`URL_VAR`] names (a
/// plain local run against 127.0.0.1:4222). `None` (and a message) with neither.
#[derive(Debug, Clone)]
pub struct SharedNats {
    /// Comma-separated for the cluster.
    pub url: String,
    /// The stream replicas it takes: 3 on the cluster, 1 on a single server.
    pub replicas: u8,
}

pub fn shared(test: &str) -> Option<SharedNats> {
    if crate::env(SERVER_VAR).is_some() {
        let cluster = NatsCluster::shared(test)?;
        return Some(SharedNats {
            url: cluster.url(),
            replicas: u8::try_from(CLUSTER_NODES).unwrap(),
        });
    }
    url(test).map(|url| SharedNats { url, replicas: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_of_its_own_listens_and_dies_with_its_handle() {
        let Some(mut server) = NatsServer::started("nats_server_of_its_own").await else {
            return;
        };
        let addr = server.url().replace("nats://", "");
        tokio::net::TcpStream::connect(&addr).await.unwrap();
        server.kill();
        crate::until("the port to close", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr).await.is_err()
        })
        .await;
        server.start().await;
        tokio::net::TcpStream::connect(&addr).await.unwrap();
    }

    #[tokio::test]
    async fn a_cluster_of_its_own_keeps_r3_streams_through_a_node_loss() {
        let Some(mut cluster) =
            NatsCluster::started("a_cluster_of_its_own_keeps_r3_streams_through_a_node_loss").await
        else {
            return;
        };
        assert_eq!(cluster.url().split(',').count(), CLUSTER_NODES);
        // Two of three keep a quorum: an R3 stream still takes writes.
        cluster.kill_node(0);
        cluster.ready().await;
        cluster.start_node(0).await;
        cluster.ready().await;
        // Every node down, then back: the cluster recovers from its files.
        cluster.kill();
        cluster.start().await;
    }
}
