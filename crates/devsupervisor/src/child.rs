//! One child process: started with its output piped into the merged [`Output`],
//! waited for by a task of its own, signalled on request, killed when dropped; and
//! whether it answers ready.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::DevError;
use crate::output::{Output, Tail};

/// A child to start: its name, command, and where it answers `GET /health/ready`
/// (none: ready once started).
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) health: Option<SocketAddr>,
    /// Set when the child serves HTTPS: whom its certificate must come from.
    pub(crate) health_tls: Option<Arc<ClientConfig>>,
    /// Shown in the table printed when everything is ready.
    pub(crate) url: Option<String>,
}

/// What the supervisor asks of a child's watcher.
pub(crate) enum Ctl {
    Term,
    Kill,
}

/// A child (by index) has exited, with this status.
pub(crate) type Exit = (usize, std::io::Result<ExitStatus>);

/// A started child, as the supervisor sees it.
pub(crate) struct Running {
    pub(crate) name: String,
    pub(crate) pid: Option<u32>,
    pub(crate) url: Option<String>,
    pub(crate) health: Option<SocketAddr>,
    pub(crate) health_tls: Option<Arc<ClientConfig>>,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
    tail: Tail,
    /// Set once the child has been waited for ...
    pub(crate) exited: bool,
    /// ... with this status (`None`: unknown).
    pub(crate) status: Option<ExitStatus>,
}

impl Running {
    /// Its last output lines, indented, to explain a failed start.
    pub(crate) fn last_lines(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.is_empty() {
            return "  (it printed nothing)".to_owned();
        }
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn status_text(&self) -> String {
        match (self.exited, &self.status) {
            (true, Some(status)) => status.to_string(),
            (true, None) => "an unknown status".to_owned(),
            (false, _) => "still running".to_owned(),
        }
    }
}

fn signal_pid(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        kill(Pid::from_raw(raw), signal).ok();
    }
}

/// Owns the child: waits for it, signals it on request, kills it when the supervisor
/// goes away, and reports its exit once its last lines are out.
async fn watch(
    mut child: Child,
    index: usize,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    exits: mpsc::UnboundedSender<Exit>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
) {
    let mut ctl_open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            msg = ctl.recv(), if ctl_open => match msg {
                // `id()` is None once the child is reaped, so a recycled pid is never
                // signalled.
                Some(Ctl::Term) => {
                    if let Some(pid) = child.id() {
                        signal_pid(pid, Signal::SIGTERM);
                    }
                }
                Some(Ctl::Kill) => drop(child.start_kill()),
                None => {
                    ctl_open = false;
                    drop(child.start_kill());
                }
            },
        }
    };
    // The last lines before the exit report (bounded: a grandchild may hold the pipe).
    for pump in pumps {
        drop(timeout(Duration::from_millis(500), pump).await);
    }
    drop(exits.send((index, status)));
}

/// Starts `spec` as child `index` of the supervisor, its lines prefixed with its name
/// padded to `width`; its exit is reported on `exits`.
pub(crate) fn spawn(
    mut spec: Spec,
    index: usize,
    width: usize,
    output: &Output,
    exits: &mpsc::UnboundedSender<Exit>,
) -> Result<Running, DevError> {
    spec.command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match spec.command.spawn() {
        Ok(child) => child,
        Err(source) => {
            return Err(DevError::Spawn {
                name: spec.name,
                source,
            });
        }
    };
    let tail = Tail::default();
    let pumps = output.attach(&mut child, &spec.name, width, index, &tail);
    let pid = child.id();
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch(child, index, ctl_rx, exits.clone(), pumps));
    Ok(Running {
        name: spec.name,
        pid,
        url: spec.url,
        health: spec.health,
        health_tls: spec.health_tls,
        ctl,
        tail,
        exited: false,
        status: None,
    })
}

/// Whether `GET /health/ready` on `addr` answers 200 (HTTP/1.1, over TLS when `tls`
/// is given; bounded).
pub(crate) async fn probe_ready(addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> bool {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        match tls {
            None => ask_ready(tcp, addr).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .ok()?;
                ask_ready(stream, addr).await
            }
        }
    };
    matches!(
        timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

async fn ask_ready<S>(mut stream: S, addr: SocketAddr) -> Option<bool>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    {
        let request =
            format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0_u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status_line = String::from_utf8_lossy(&head);
        let mut parts = status_line.split_whitespace();
        let version = parts.next()?;
        Some(version.starts_with("HTTP/") && parts.next() == Some("200"))
    }
}
