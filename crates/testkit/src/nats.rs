//! NATS for tests: the shared server `BAZAAR_TEST_NATS_URL` names, or a `nats-server
//! -js` of the test's own.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
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

/// `BAZAAR_TEST_NATS_URL`, or `None` after saying that `test` is skipped.
pub fn url(test: &str) -> Option<String> {
    let url = crate::env(URL_VAR);
    if url.is_none() {
        crate::skip(test, &format!("{URL_VAR} is not set"));
    }
    url
}

/// A `nats-server -js` of the test's own on a free loopback port, its store in a temp
/// directory that survives restarts. Killed (SIGKILL) when dropped; its log printed
/// when the test fails.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Not started yet; `None` (and a message) when the binary is not installed.
    pub fn new(test: &str) -> Option<Self> {
        let binary = std::env::var_os(SERVER_VAR)
            .map_or_else(|| PathBuf::from(DEFAULT_SERVER), PathBuf::from);
        if !binary.is_file() {
            crate::skip(
                test,
                &format!("no nats-server at {} (set {SERVER_VAR})", binary.display()),
            );
            return None;
        }
        Some(Self {
            binary,
            port: crate::free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        })
    }

    /// [`NatsServer::new`], started.
    pub async fn started(test: &str) -> Option<Self> {
        let mut server = Self::new(test)?;
        server.start().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Starts it and waits (bounded) until it accepts connections.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path().join("jetstream"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        crate::eventually_within("nats-server to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Ok(file) = std::fs::File::open(self.log()) {
                let lines: Vec<String> =
                    BufReader::new(file).lines().map_while(Result::ok).collect();
                eprintln!("===== nats-server (last {LOG_TAIL} lines) =====");
                for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
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
}
