//! `bazaar dev --split`: compose without Docker.
//!
//! Starts every module and then the gateway as child processes of this same binary
//! (`bazaar serve --only <module>`) on consecutive local ports, against the PostgreSQL
//! and NATS the configuration names; merges their output with a per-service prefix and
//! stops them all on Ctrl-C or SIGTERM (gateway first, then the modules).
//!
//! The supervision itself ([`supervise`]) knows nothing of bazaar: it takes stages of
//! named commands, so the tests drive it with `sh`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bazaar::config::{Config, Overrides};
use chassis::CancellationToken;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// The edge process, and the modules in the order they get ports (gateway port + 1,
/// + 2, ...).
pub(crate) use bazaar::topology::{GATEWAY, MODULES};
/// How long each service may take to answer 200 on `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to `shutdown_timeout_secs` before stragglers are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many of a child's last output lines are kept to explain a failed start.
const TAIL_LINES: usize = 30;

#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Run each module and the gateway as its own process (the split topology). Required
    /// for now; for the monolith run `bazaar serve`.
    #[arg(long)]
    split: bool,
    /// Where the gateway listens; the modules listen on the same IP at the next seven
    /// ports (identity, catalog, cart, payments, orders, notifications, analytics)
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// The first module's port (the modules take PORT..=PORT+6) [default: the gateway's
    /// port + 1].
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// PostgreSQL for every module (each in its own schema) [env: BAZAAR_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// NATS with JetStream, the bus between the processes [env: BAZAAR_NATS_URL].
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
}

// ---------------------------------------------------------------------------------
// The plan: ports, environment and command line of every child (pure).

/// One service of the plan: where it listens and where the others reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub(crate) name: &'static str,
    pub(crate) listen: SocketAddr,
    /// `http://<ip>:<port>`, with an unspecified listen IP replaced by loopback.
    pub(crate) url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) gateway: Planned,
    /// In [`MODULES`] order.
    pub(crate) modules: Vec<Planned>,
}

/// Where a client on this machine connects to reach a listener on `listen`.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}

fn planned(name: &'static str, listen: SocketAddr) -> Planned {
    Planned {
        name,
        listen,
        url: format!("http://{}", reachable(listen)),
    }
}

impl Plan {
    /// The gateway on `gateway`; the modules on its IP at `base_port` (default: the
    /// gateway's port + 1) and the six ports after it.
    pub(crate) fn new(gateway: SocketAddr, base_port: Option<u16>) -> anyhow::Result<Self> {
        if gateway.port() == 0 {
            bail!(
                "bazaar dev needs a fixed gateway port (--http-addr / BAZAAR_HTTP_ADDR), not port 0"
            );
        }
        let count = u16::try_from(MODULES.len()).context("too many modules")?;
        let base = match base_port {
            Some(0) => bail!("--base-port must not be 0"),
            Some(port) => port,
            None => gateway.port().checked_add(1).context(
                "the gateway's port is the highest there is: no room for the modules after it (use --base-port)",
            )?,
        };
        let last = base.checked_add(count - 1).with_context(|| {
            format!(
                "the modules need ports {base} to {}: past 65535",
                u32::from(base) + u32::from(count) - 1
            )
        })?;
        if (base..=last).contains(&gateway.port()) {
            bail!(
                "the gateway's port {} falls in the modules' ports {base}..={last} (choose another --base-port)",
                gateway.port()
            );
        }
        let modules = MODULES
            .iter()
            .zip(base..=last)
            .map(|(name, port)| planned(name, SocketAddr::new(gateway.ip(), port)))
            .collect();
        Ok(Self {
            gateway: planned(GATEWAY, gateway),
            modules,
        })
    }

    /// Modules first, then the gateway.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Planned> {
        self.modules.iter().chain(std::iter::once(&self.gateway))
    }

    /// Fails early, naming the service, when one of the ports is taken.
    fn check_free(&self) -> anyhow::Result<()> {
        for service in self.all() {
            std::net::TcpListener::bind(service.listen).with_context(|| {
                format!(
                    "cannot listen on {} for {}: is another bazaar running? (choose ports with --http-addr and --base-port)",
                    service.listen, service.name
                )
            })?;
        }
        Ok(())
    }
}

/// What every child shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// Each child gets `<data_dir>/<its name>`.
    pub(crate) data_dir: PathBuf,
    pub(crate) database_url: String,
    pub(crate) nats_url: String,
    pub(crate) nats_prefix: String,
    pub(crate) jwt_secret: String,
    pub(crate) service_secret: String,
}

/// The environment one child runs with: these set on top of the parent's, those
/// removed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildEnv {
    pub(crate) set: Vec<(String, OsString)>,
    pub(crate) remove: Vec<String>,
}

fn peer_var(module: &str) -> String {
    format!("BAZAAR_PEER_{}", module.to_ascii_uppercase())
}

/// `who`'s environment: its address and data dir, the shared stores and secrets, and
/// every other module as a peer (the gateway gets all seven).
pub(crate) fn child_env(plan: &Plan, who: &Planned, shared: &Shared) -> ChildEnv {
    let mut set: Vec<(String, OsString)> = vec![
        ("BAZAAR_HTTP_ADDR".into(), who.listen.to_string().into()),
        (
            "BAZAAR_DATA_DIR".into(),
            shared.data_dir.join(who.name).into(),
        ),
        (
            "BAZAAR_DATABASE_URL".into(),
            shared.database_url.clone().into(),
        ),
        ("BAZAAR_NATS_URL".into(), shared.nats_url.clone().into()),
        (
            "BAZAAR_NATS_PREFIX".into(),
            shared.nats_prefix.clone().into(),
        ),
        ("BAZAAR_JWT_SECRET".into(), shared.jwt_secret.clone().into()),
        (
            "BAZAAR_SERVICE_SECRET".into(),
            shared.service_secret.clone().into(),
        ),
    ];
    let mut remove = vec!["BAZAAR_ONLY".to_owned()];
    for module in &plan.modules {
        if module.name == who.name {
            // A peer variable for itself, inherited from the user's shell, would only
            // confuse it.
            remove.push(peer_var(module.name));
        } else {
            set.push((peer_var(module.name), module.url.clone().into()));
        }
    }
    ChildEnv { set, remove }
}

/// `<exe> [global flags] serve --only <name>` with `env`, output piped, killed if
/// dropped.
pub(crate) fn child_command(
    exe: &Path,
    global_args: &[OsString],
    name: &str,
    env: &ChildEnv,
) -> Command {
    let mut command = Command::new(exe);
    command
        .args(global_args)
        .args(["serve", "--only", name])
        .stdin(Stdio::null());
    for key in &env.remove {
        command.env_remove(key);
    }
    command.envs(env.set.iter().map(|(k, v)| (k, v)));
    command
}

/// The configured secret, or the one kept in `path` (created once: base64url of 32
/// random bytes, mode 0600), the format `chassis::auth::Tokens` keeps `jwt-secret` in.
pub(crate) fn load_or_create_secret(
    configured: Option<&str>,
    path: &Path,
) -> anyhow::Result<String> {
    if let Some(secret) = configured {
        return Ok(secret.to_owned());
    }
    let read = |path: &Path| -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() >= 32 => Ok(Some(text.trim().to_owned())),
            Ok(_) => bail!(
                "{} holds fewer than 32 bytes: delete it to have a new secret generated",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        }
    };
    if let Some(secret) = read(path)? {
        return Ok(secret);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret)
        }
        // Another start created it meanwhile: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} vanished", path.display()))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {}", path.display()))),
    }
}

// ---------------------------------------------------------------------------------
// Output: every line whole, from one writer thread per stream.

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// Where the children's lines and the supervisor's own messages go. One thread per
/// stream writes whole lines, so lines never interleave mid-line.
#[derive(Clone)]
pub(crate) struct Output {
    out: mpsc::Sender<Msg>,
    err: mpsc::Sender<Msg>,
    color_out: bool,
    color_err: bool,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

fn writer(mut sink: Box<dyn Write + Send>) -> mpsc::Sender<Msg> {
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    std::thread::spawn(move || {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                // A closed terminal or pipe: nothing better to do than drop the line.
                Msg::Line(line) => drop(sink.write_all(&line).and_then(|()| sink.flush())),
                Msg::Flush(done) => drop(done.send(())),
            }
        }
    });
    tx
}

impl Output {
    pub(crate) fn new(
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        color_out: bool,
        color_err: bool,
    ) -> Self {
        Self {
            out: writer(out),
            err: writer(err),
            color_out,
            color_err,
        }
    }

    /// The process's stdout and stderr, colored where they are terminals (unless
    /// NO_COLOR is set).
    pub(crate) fn stdio() -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let color_out = color && std::io::stdout().is_terminal();
        let color_err = color && std::io::stderr().is_terminal();
        Self::new(
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
            color_out,
            color_err,
        )
    }

    /// One line of the supervisor's own, on stderr.
    pub(crate) async fn say(&self, text: impl Into<String>) {
        let mut line = text.into().into_bytes();
        line.push(b'\n');
        drop(self.err.send(Msg::Line(line)).await);
    }

    /// Waits (briefly) until every line sent so far is written.
    pub(crate) async fn flush(&self) {
        for sink in [&self.out, &self.err] {
            let (tx, rx) = oneshot::channel();
            if sink.send(Msg::Flush(tx)).await.is_ok() {
                drop(timeout(Duration::from_secs(2), rx).await);
            }
        }
    }
}

const COLORS: [&str; 8] = ["36", "32", "33", "35", "34", "96", "92", "95"];

/// `name` padded to `width`, then ` | `; the name colored when `color` is given.
pub(crate) fn prefix(name: &str, width: usize, color: Option<&str>) -> Vec<u8> {
    match color {
        Some(code) => format!("\x1b[{code}m{name:<width$} |\x1b[0m ").into_bytes(),
        None => format!("{name:<width$} | ").into_bytes(),
    }
}

/// `line` (with or without its `\n`) behind `prefix`, ending in exactly one `\n`.
pub(crate) fn prefixed(prefix: &[u8], line: &[u8]) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut out = Vec::with_capacity(prefix.len() + body.len() + 1);
    out.extend_from_slice(prefix);
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// Copies `reader`'s lines to `sink` behind `prefix` and keeps the last ones in `tail`.
async fn pump(
    reader: impl AsyncRead + Unpin,
    prefix: Vec<u8>,
    sink: mpsc::Sender<Msg>,
    tail: Tail,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut sink = Some(sink);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        {
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(line.trim_ascii_end()).into_owned());
        }
        if let Some(tx) = &sink {
            // Nobody writes any more: keep draining so the child never blocks on a
            // full pipe.
            if tx.send(Msg::Line(prefixed(&prefix, &line))).await.is_err() {
                sink = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Supervision.

/// A child to start: its name, command, and where it answers `GET /health/ready`
/// (none: ready once started).
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) health: Option<SocketAddr>,
    /// Shown in the table printed when everything is ready.
    pub(crate) url: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How long each child may take to become ready.
    pub(crate) ready_timeout: Duration,
    /// How long one stage may take to stop after SIGTERM before SIGKILL.
    pub(crate) stop_timeout: Duration,
    /// How often readiness is polled.
    pub(crate) poll_every: Duration,
    /// Printed under the table once everything is ready.
    pub(crate) banner: Option<String>,
}

/// Cancel `stop` to stop gracefully; `force` to kill at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Control {
    pub(crate) stop: CancellationToken,
    pub(crate) force: CancellationToken,
}

/// How a child ended.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) name: String,
    /// `None`: it could not be waited for, or did not die even when killed.
    pub(crate) status: Option<ExitStatus>,
}

enum Ctl {
    Term,
    Kill,
}

type Exit = (usize, std::io::Result<ExitStatus>);

struct Running {
    name: String,
    pid: Option<u32>,
    url: Option<String>,
    health: Option<SocketAddr>,
    ctl: mpsc::UnboundedSender<Ctl>,
    tail: Tail,
    /// Set once the child has been waited for ...
    exited: bool,
    /// ... with this status (`None`: unknown).
    status: Option<ExitStatus>,
}

impl Running {
    fn last_lines(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.is_empty() {
            return "  (it printed nothing)".to_owned();
        }
        tail.iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn status_text(&self) -> String {
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

fn spawn(
    mut spec: Spec,
    index: usize,
    width: usize,
    output: &Output,
    exits: &mpsc::UnboundedSender<Exit>,
) -> anyhow::Result<Running> {
    spec.command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spec
        .command
        .spawn()
        .with_context(|| format!("cannot start {}", spec.name))?;
    let color = COLORS[index % COLORS.len()];
    let tail = Tail::default();
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let prefix = prefix(&spec.name, width, output.color_out.then_some(color));
        pumps.push(tokio::spawn(pump(
            stdout,
            prefix,
            output.out.clone(),
            Arc::clone(&tail),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        let prefix = prefix(&spec.name, width, output.color_err.then_some(color));
        pumps.push(tokio::spawn(pump(
            stderr,
            prefix,
            output.err.clone(),
            Arc::clone(&tail),
        )));
    }
    let pid = child.id();
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch(child, index, ctl_rx, exits.clone(), pumps));
    Ok(Running {
        name: spec.name,
        pid,
        url: spec.url,
        health: spec.health,
        ctl,
        tail,
        exited: false,
        status: None,
    })
}

/// Whether `GET /health/ready` on `addr` answers 200 (plain HTTP/1.1, bounded).
pub(crate) async fn probe_ready(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
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
    };
    matches!(
        timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

enum Startup {
    Ready,
    Stopped,
    Failed(String),
}

struct Supervisor<'a> {
    children: Vec<Running>,
    /// `children[stages[i].clone()]` is stage i.
    stages: Vec<std::ops::Range<usize>>,
    exits: mpsc::UnboundedReceiver<Exit>,
    settings: &'a Settings,
    control: &'a Control,
    output: &'a Output,
}

impl Supervisor<'_> {
    fn record(&mut self, (index, status): Exit) -> Option<&Running> {
        let child = self.children.get_mut(index)?;
        child.exited = true;
        child.status = status.ok();
        Some(child)
    }

    /// Waits until every child of `range` answers ready; fails when any child started
    /// so far exits or one of `range` is not ready in time.
    async fn wait_ready(&mut self, range: std::ops::Range<usize>) -> Startup {
        let deadline = Instant::now() + self.settings.ready_timeout;
        let mut pending: Vec<usize> = range
            .filter(|&i| self.children[i].health.is_some())
            .collect();
        loop {
            while let Ok(exit) = self.exits.try_recv() {
                if let Some(child) = self.record(exit) {
                    return Startup::Failed(format!(
                        "{} exited with {} before everything was ready; its last lines:\n{}",
                        child.name,
                        child.status_text(),
                        child.last_lines()
                    ));
                }
            }
            let mut still = Vec::new();
            for index in pending {
                if let Some(addr) = self.children[index].health {
                    if !probe_ready(addr).await {
                        still.push(index);
                    }
                }
            }
            pending = still;
            let Some(&first) = pending.first() else {
                return Startup::Ready;
            };
            if Instant::now() >= deadline {
                let child = &self.children[first];
                return Startup::Failed(format!(
                    "{} was not ready within {} s (GET http://{}/health/ready); its last lines:\n{}",
                    child.name,
                    self.settings.ready_timeout.as_secs(),
                    child.health.map_or_else(String::new, |a| a.to_string()),
                    child.last_lines()
                ));
            }
            tokio::select! {
                () = self.control.stop.cancelled() => return Startup::Stopped,
                () = sleep(self.settings.poll_every) => {}
                Some(exit) = self.exits.recv() => {
                    if let Some(child) = self.record(exit) {
                        return Startup::Failed(format!(
                            "{} exited with {} before everything was ready; its last lines:\n{}",
                            child.name,
                            child.status_text(),
                            child.last_lines()
                        ));
                    }
                }
            }
        }
    }

    async fn print_table(&self) {
        let width = self
            .children
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(7);
        let url_width = self
            .children
            .iter()
            .map(|c| c.url.as_deref().map_or(1, str::len))
            .max()
            .unwrap_or(0)
            .max(3);
        let mut lines = vec![format!(
            "[dev] {:<width$}  {:<url_width$}  pid",
            "service", "url"
        )];
        // The gateway (last stage) first: it is the one to use.
        for stage in self.stages.iter().rev() {
            for child in &self.children[stage.clone()] {
                lines.push(format!(
                    "[dev] {:<width$}  {:<url_width$}  {}",
                    child.name,
                    child.url.as_deref().unwrap_or("-"),
                    child.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                ));
            }
        }
        if let Some(banner) = &self.settings.banner {
            lines.push(banner.clone());
        }
        self.output.say(lines.join("\n")).await;
    }

    /// Runs until stopped; a child exiting on its own is reported and the others keep
    /// running. Returns an error only when every child has exited.
    async fn run(&mut self) -> anyhow::Result<()> {
        loop {
            if self.children.iter().all(|c| c.exited) {
                bail!("every service has exited");
            }
            tokio::select! {
                biased;
                () = self.control.stop.cancelled() => return Ok(()),
                Some(exit) = self.exits.recv() => {
                    // A Ctrl-C in the terminal reaches the children too: when the stop
                    // follows right behind, this exit is part of it (reported once, with
                    // the others), not a crash.
                    let stopping = timeout(Duration::from_millis(250), self.control.stop.cancelled())
                        .await
                        .is_ok();
                    let output = self.output;
                    if let Some(child) = self.record(exit) {
                        if !stopping {
                            let text = format!(
                                "[dev] {} exited with {} (the others keep running; restart dev to bring it back)",
                                child.name,
                                child.status_text()
                            );
                            output.say(text).await;
                        }
                    }
                    if stopping {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Stops the stages in reverse order (the gateway first): SIGTERM, then SIGKILL
    /// for whatever still runs after `stop_timeout`. Reports every exit status.
    async fn shutdown(&mut self) {
        let stages: Vec<_> = self.stages.iter().rev().cloned().collect();
        for stage in stages {
            for child in &self.children[stage.clone()] {
                if !child.exited {
                    drop(child.ctl.send(Ctl::Term));
                }
            }
            let deadline = Instant::now() + self.settings.stop_timeout;
            let mut killed_at = None;
            while self.children[stage.clone()].iter().any(|c| !c.exited) {
                let forced = self.control.force.is_cancelled();
                if killed_at.is_none() && (forced || Instant::now() >= deadline) {
                    for child in &self.children[stage.clone()] {
                        if !child.exited {
                            let why = if forced {
                                "asked twice"
                            } else {
                                "still running after the stop timeout"
                            };
                            self.output
                                .say(format!("[dev] killing {} ({why})", child.name))
                                .await;
                            drop(child.ctl.send(Ctl::Kill));
                        }
                    }
                    killed_at = Some(Instant::now());
                }
                if killed_at.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
                    // Not even SIGKILL: give up on it rather than hang.
                    for child in &mut self.children[stage.clone()] {
                        if !child.exited {
                            child.exited = true;
                        }
                    }
                    break;
                }
                tokio::select! {
                    Some(exit) = self.exits.recv() => {
                        self.record(exit);
                    }
                    () = sleep_until(deadline), if killed_at.is_none() => {}
                    () = self.control.force.cancelled(), if killed_at.is_none() => {}
                    () = sleep(Duration::from_millis(200)), if killed_at.is_some() => {}
                }
            }
        }
        let width = self
            .children
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        let mut lines = Vec::new();
        for stage in self.stages.iter().rev() {
            for child in &self.children[stage.clone()] {
                lines.push(format!(
                    "[dev] {:<width$}  {}",
                    child.name,
                    child.status_text()
                ));
            }
        }
        self.output.say(lines.join("\n")).await;
    }

    fn ended(self) -> Vec<Ended> {
        self.children
            .into_iter()
            .map(|c| Ended {
                name: c.name,
                status: c.status,
            })
            .collect()
    }
}

/// Starts `stages` in order, each child of a stage at once and the next stage only
/// when every child of this one answers ready; then runs until `control.stop`, and
/// stops the stages in reverse order. A failed start stops what was started and
/// returns an error with the failing child's last lines. Returns how each child ended.
pub(crate) async fn supervise(
    stages: Vec<Vec<Spec>>,
    settings: &Settings,
    control: &Control,
    output: &Output,
) -> anyhow::Result<Vec<Ended>> {
    let width = stages
        .iter()
        .flatten()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    let (exit_tx, exits) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        children: Vec::new(),
        stages: Vec::new(),
        exits,
        settings,
        control,
        output,
    };
    let mut failure = None;
    'stages: for stage in stages {
        let start = supervisor.children.len();
        for spec in stage {
            let index = supervisor.children.len();
            match spawn(spec, index, width, output, &exit_tx) {
                Ok(child) => supervisor.children.push(child),
                Err(e) => {
                    failure = Some(format!("{e:#}"));
                    supervisor.stages.push(start..supervisor.children.len());
                    break 'stages;
                }
            }
        }
        let range = start..supervisor.children.len();
        supervisor.stages.push(range.clone());
        match supervisor.wait_ready(range).await {
            Startup::Ready => {}
            Startup::Stopped => break 'stages,
            Startup::Failed(message) => {
                failure = Some(message);
                break 'stages;
            }
        }
    }
    let mut result = Ok(());
    if failure.is_none() && !control.stop.is_cancelled() {
        supervisor.print_table().await;
        result = supervisor.run().await;
    }
    if failure.is_some() {
        // The reason comes last, as the error (with the child's last lines).
        output
            .say("[dev] the start failed; stopping the others")
            .await;
    } else if result.is_ok() {
        output
            .say("[dev] stopping: the gateway first, then the modules")
            .await;
    }
    supervisor.shutdown().await;
    if let Some(message) = failure {
        bail!(message);
    }
    result?;
    Ok(supervisor.ended())
}

/// The first SIGINT/SIGTERM stops gracefully, the second kills.
fn stop_on_signals(control: &Control) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let control = control.clone();
    tokio::spawn(async move {
        for token in [&control.stop, &control.force] {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            token.cancel();
        }
    });
    Ok(())
}

/// `bazaar dev`.
pub(crate) async fn run(global: &super::Global, args: DevArgs) -> anyhow::Result<()> {
    if !args.split {
        bail!(
            "`bazaar dev` runs the split topology and needs --split (`bazaar dev --split`); \
             for the monolith, run `bazaar serve`"
        );
    }
    let overrides = Overrides {
        http_addr: args.http_addr,
        data_dir: global.data_dir.clone(),
        ..Overrides::default()
    };
    let mut config = Config::load(global.config.as_deref(), &overrides)?;
    if args.database_url.is_some() {
        config.database_url = args.database_url;
    }
    if args.nats_url.is_some() {
        config.nats_url = args.nats_url;
    }
    config.validate()?;
    let database_url = config.database_url.clone().context(
        "bazaar dev --split needs PostgreSQL: set BAZAAR_DATABASE_URL \
         (e.g. postgres://postgres@127.0.0.1:5432/bazaar), database_url in the config file, \
         or --database-url",
    )?;
    let nats_url = config.nats_url.clone().context(
        "bazaar dev --split needs NATS with JetStream: set BAZAAR_NATS_URL \
         (e.g. nats://127.0.0.1:4222), nats_url in the config file, or --nats-url",
    )?;
    let plan = Plan::new(config.http_addr, args.base_port)?;
    plan.check_free()?;

    let data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("bad data dir {}", config.data_dir.display()))?;
    let shared = Shared {
        jwt_secret: load_or_create_secret(
            config.jwt_secret.as_deref(),
            &data_dir.join("jwt-secret"),
        )?,
        service_secret: load_or_create_secret(
            config.service_secret.as_deref(),
            &data_dir.join("service-secret"),
        )?,
        data_dir,
        database_url,
        nats_url,
        nats_prefix: config.nats_prefix.clone(),
    };
    for service in plan.all() {
        let dir = shared.data_dir.join(service.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let exe = std::env::current_exe().context("cannot find the bazaar executable")?;
    let mut global_args: Vec<OsString> = Vec::new();
    if let Some(file) = &global.config {
        global_args.push("--config".into());
        global_args.push(file.clone().into());
    }
    if let Some(format) = global
        .log_format
        .and_then(|f| clap::ValueEnum::to_possible_value(&f))
    {
        global_args.push("--log-format".into());
        global_args.push(format.get_name().into());
    }
    let spec = |service: &Planned| Spec {
        name: service.name.to_owned(),
        command: child_command(
            &exe,
            &global_args,
            service.name,
            &child_env(&plan, service, &shared),
        ),
        health: Some(reachable(service.listen)),
        url: Some(service.url.clone()),
    };
    let stages = vec![
        plan.modules.iter().map(spec).collect(),
        vec![spec(&plan.gateway)],
    ];
    let settings = Settings {
        ready_timeout: READY_TIMEOUT,
        stop_timeout: Duration::from_secs(config.shutdown_timeout_secs) + STOP_GRACE,
        poll_every: Duration::from_millis(200),
        banner: Some(format!("bazaar is ready at {}", plan.gateway.url)),
    };
    let control = Control::default();
    stop_on_signals(&control)?;
    let output = Output::stdio();
    let result = supervise(stages, &settings, &control, &output).await;
    if let Ok(ended) = &result {
        let unclean: Vec<_> = ended
            .iter()
            .filter(|e| !e.status.is_some_and(|s| s.success()))
            .map(|e| e.name.as_str())
            .collect();
        if unclean.is_empty() {
            output
                .say("[dev] stopped; every service exited cleanly")
                .await;
        } else {
            output
                .say(format!(
                    "[dev] stopped; not cleanly: {}",
                    unclean.join(", ")
                ))
                .await;
        }
    }
    output.flush().await;
    result.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn shared() -> Shared {
        Shared {
            data_dir: PathBuf::from("/tmp/bz"),
            database_url: "postgres://pg@db/bazaar".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: "bazaar".into(),
            jwt_secret: "j".repeat(32),
            service_secret: "s".repeat(32),
        }
    }

    #[test]
    fn ports_follow_the_gateway_in_module_order() {
        let plan = Plan::new(addr("127.0.0.1:8080"), None).unwrap();
        assert_eq!(plan.gateway.listen, addr("127.0.0.1:8080"));
        assert_eq!(plan.gateway.url, "http://127.0.0.1:8080");
        let ports: Vec<_> = plan
            .modules
            .iter()
            .map(|m| (m.name, m.listen.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("identity", 8081),
                ("catalog", 8082),
                ("cart", 8083),
                ("payments", 8084),
                ("orders", 8085),
                ("notifications", 8086),
                ("analytics", 8087)
            ]
        );
        let names: Vec<_> = plan.all().map(|s| s.name).collect();
        assert_eq!(names.last(), Some(&"gateway"));
    }

    #[test]
    fn base_port_moves_the_modules() {
        let plan = Plan::new(addr("0.0.0.0:9000"), Some(7001)).unwrap();
        assert_eq!(plan.modules[0].listen, addr("0.0.0.0:7001"));
        assert_eq!(plan.modules[6].listen, addr("0.0.0.0:7007"));
        // Peers reach an unspecified address on loopback.
        assert_eq!(plan.modules[1].url, "http://127.0.0.1:7002");
        assert_eq!(plan.gateway.url, "http://127.0.0.1:9000");
        let v6 = Plan::new(addr("[::1]:8080"), None).unwrap();
        assert_eq!(v6.modules[0].url, "http://[::1]:8081");
    }

    #[test]
    fn impossible_port_plans_are_refused() {
        let err = |gateway: &str, base| Plan::new(addr(gateway), base).unwrap_err().to_string();
        assert!(err("127.0.0.1:0", None).contains("port 0"));
        assert!(err("127.0.0.1:65535", None).contains("--base-port"));
        assert!(err("127.0.0.1:65530", None).contains("65535"));
        assert!(err("127.0.0.1:8080", Some(8077)).contains("8080"));
        assert!(err("127.0.0.1:8080", Some(0)).contains('0'));
        assert!(Plan::new(addr("127.0.0.1:8080"), Some(8073)).is_ok());
        assert!(Plan::new(addr("127.0.0.1:65528"), None).is_ok());
    }

    fn env_map(env: &ChildEnv) -> std::collections::BTreeMap<String, String> {
        env.set
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string_lossy().into_owned()))
            .collect()
    }

    #[test]
    fn a_module_gets_its_address_dir_shared_settings_and_the_other_six_peers() {
        let plan = Plan::new(addr("127.0.0.1:8080"), None).unwrap();
        let catalog = &plan.modules[1];
        let env = child_env(&plan, catalog, &shared());
        let vars = env_map(&env);
        assert_eq!(vars["BAZAAR_HTTP_ADDR"], "127.0.0.1:8082");
        assert_eq!(vars["BAZAAR_DATA_DIR"], "/tmp/bz/catalog");
        assert_eq!(vars["BAZAAR_DATABASE_URL"], "postgres://pg@db/bazaar");
        assert_eq!(vars["BAZAAR_NATS_URL"], "nats://127.0.0.1:4222");
        assert_eq!(vars["BAZAAR_NATS_PREFIX"], "bazaar");
        assert_eq!(vars["BAZAAR_JWT_SECRET"], "j".repeat(32));
        assert_eq!(vars["BAZAAR_SERVICE_SECRET"], "s".repeat(32));
        let peers: Vec<_> = vars
            .keys()
            .filter(|k| k.starts_with("BAZAAR_PEER_"))
            .collect();
        assert_eq!(peers.len(), 6, "{peers:?}");
        assert!(!vars.contains_key("BAZAAR_PEER_CATALOG"));
        assert_eq!(vars["BAZAAR_PEER_IDENTITY"], "http://127.0.0.1:8081");
        assert_eq!(vars["BAZAAR_PEER_ANALYTICS"], "http://127.0.0.1:8087");
        assert!(env.remove.contains(&"BAZAAR_PEER_CATALOG".to_owned()));
        assert!(env.remove.contains(&"BAZAAR_ONLY".to_owned()));
    }

    #[test]
    fn the_gateway_gets_all_seven_peers() {
        let plan = Plan::new(addr("127.0.0.1:8080"), None).unwrap();
        let vars = env_map(&child_env(&plan, &plan.gateway, &shared()));
        assert_eq!(vars["BAZAAR_HTTP_ADDR"], "127.0.0.1:8080");
        assert_eq!(vars["BAZAAR_DATA_DIR"], "/tmp/bz/gateway");
        for (module, port) in MODULES.iter().zip(8081..) {
            assert_eq!(vars[&peer_var(module)], format!("http://127.0.0.1:{port}"));
        }
    }

    #[test]
    fn the_command_is_serve_only_with_the_global_flags_first() {
        let plan = Plan::new(addr("127.0.0.1:8080"), None).unwrap();
        let env = child_env(&plan, &plan.modules[3], &shared());
        let command = child_command(
            Path::new("/bin/bazaar"),
            &["--config".into(), "b.toml".into()],
            "payments",
            &env,
        );
        let std = command.as_std();
        assert_eq!(std.get_program(), "/bin/bazaar");
        let args: Vec<_> = std.get_args().collect();
        assert_eq!(args, ["--config", "b.toml", "serve", "--only", "payments"]);
        let envs: Vec<_> = std.get_envs().collect();
        assert!(envs.contains(&(std::ffi::OsStr::new("BAZAAR_PEER_PAYMENTS"), None)));
        assert!(envs.contains(&(
            std::ffi::OsStr::new("BAZAAR_HTTP_ADDR"),
            Some(std::ffi::OsStr::new("127.0.0.1:8084"))
        )));
    }

    #[test]
    fn lines_are_prefixed_with_the_padded_name() {
        assert_eq!(prefix("cart", 13, None), b"cart          | ");
        assert_eq!(prefix("notifications", 13, None), b"notifications | ");
        assert_eq!(prefix("cart", 6, Some("36")), b"\x1b[36mcart   |\x1b[0m ");
        let p = prefix("cart", 6, None);
        assert_eq!(prefixed(&p, b"{\"a\":1}\n"), b"cart   | {\"a\":1}\n");
        assert_eq!(prefixed(&p, b"no newline"), b"cart   | no newline\n");
        assert_eq!(prefixed(&p, b"crlf\r\n"), b"cart   | crlf\n");
        assert_eq!(prefixed(&p, b"\n"), b"cart   | \n");
    }

    #[test]
    fn secrets_are_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("service-secret");
        let first = load_or_create_secret(None, &path).unwrap();
        assert_eq!(first.len(), 43, "base64url of 32 bytes, unpadded");
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(load_or_create_secret(None, &path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = "c".repeat(40);
        assert_eq!(
            load_or_create_secret(Some(&configured), &path).unwrap(),
            configured
        );
        std::fs::write(dir.path().join("short"), "tiny").unwrap();
        let err = load_or_create_secret(None, &dir.path().join("short")).unwrap_err();
        assert!(err.to_string().contains("fewer than 32"), "{err}");
    }

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn captured() -> (Output, Buf, Buf) {
        let (out, err) = (Buf::default(), Buf::default());
        (
            Output::new(Box::new(out.clone()), Box::new(err.clone()), false, false),
            out,
            err,
        )
    }

    fn sh(name: &str, script: &str) -> Spec {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        Spec {
            name: name.to_owned(),
            command,
            health: None,
            url: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            ready_timeout: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(3),
            poll_every: Duration::from_millis(50),
            banner: Some("all up".into()),
        }
    }

    fn gone(pid: u32) -> bool {
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_err()
    }

    /// Serves 200 on every request, as a stand-in readiness endpoint.
    async fn always_ready() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0_u8; 512];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        addr
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn probes_readiness_over_http() {
        assert!(probe_ready(always_ready().await).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!probe_ready(closed).await);
    }

    #[tokio::test]
    async fn runs_stages_prefixes_output_reports_a_crash_and_stops_in_reverse() {
        let (output, out, err) = captured();
        let control = Control::default();
        let ready = always_ready().await;
        let mut module = sh(
            "alpha",
            "echo hello from alpha; echo warn >&2; exec sleep 30",
        );
        module.health = Some(ready);
        module.url = Some("http://alpha".into());
        let crasher = sh("beta", "echo beta up; sleep 0.3; exit 3");
        let edge = sh("edge", "echo edge up; exec sleep 30");
        let stop = control.clone();
        let task = tokio::spawn({
            let output = output.clone();
            async move {
                supervise(
                    vec![vec![module, crasher], vec![edge]],
                    &settings(),
                    &stop,
                    &output,
                )
                .await
            }
        });
        until("beta's crash report", || {
            err.text().contains("[dev] beta exited with exit status: 3")
        })
        .await;
        until("edge's line", || out.text().contains("edge  | edge up\n")).await;
        control.stop.cancel();
        let ended = task.await.unwrap().unwrap();
        output.flush().await;
        let (out, err) = (out.text(), err.text());
        assert!(out.contains("alpha | hello from alpha\n"), "{out}");
        assert!(out.contains("beta  | beta up\n"), "{out}");
        assert!(err.contains("alpha | warn\n"), "{err}");
        assert!(err.contains("all up"), "{err}");
        assert!(err.contains("http://alpha"), "{err}");
        // Reported once while running, then in the summary.
        assert_eq!(err.matches("beta exited with").count(), 1, "{err}");
        let names: Vec<_> = ended.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "edge"]);
        assert_eq!(ended[1].status.unwrap().code(), Some(3));
        // exec sleep: SIGTERM ends them.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&ended[0].status.unwrap()),
            Some(15)
        );
        // The edge stops before the modules.
        let summary = err.rsplit("stopping").next().unwrap();
        assert!(
            summary.find("edge").unwrap() < summary.find("alpha").unwrap(),
            "{summary}"
        );
    }

    #[tokio::test]
    async fn stragglers_are_killed_after_the_stop_timeout() {
        let (output, _out, err) = captured();
        let control = Control::default();
        let stubborn = sh(
            "stubborn",
            "trap '' TERM; echo up; while :; do sleep 0.1; done",
        );
        let mut settings = settings();
        settings.stop_timeout = Duration::from_millis(500);
        control.stop.cancel();
        // Stopped before it was ever ready: still stopped cleanly, no error.
        let stop = control.clone();
        let ended = supervise(vec![vec![stubborn]], &settings, &stop, &output)
            .await
            .unwrap();
        assert!(ended[0].status.is_some());

        let control = Control::default();
        let stubborn = sh(
            "stubborn",
            "trap '' TERM; echo up; while :; do sleep 0.1; done",
        );
        let stop = control.clone();
        let task = tokio::spawn({
            let output = output.clone();
            async move { supervise(vec![vec![stubborn]], &settings, &stop, &output).await }
        });
        until("the table", || err.text().contains("all up")).await;
        control.stop.cancel();
        let ended = task.await.unwrap().unwrap();
        output.flush().await;
        let status = ended[0].status.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(err.text().contains("killing stubborn"), "{}", err.text());
    }

    #[tokio::test]
    async fn a_child_that_is_never_ready_fails_the_start_and_stops_the_others() {
        let (output, _out, err) = captured();
        let control = Control::default();
        let ready = always_ready().await;
        let mut fine = sh("fine", "exec sleep 30");
        fine.health = Some(ready);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut slow = sh(
            "slow",
            "echo booting; echo cannot connect >&2; exec sleep 30",
        );
        slow.health = Some(closed);
        let never = sh("never", "exec sleep 30");
        let started = Instant::now();
        let error = supervise(
            vec![vec![fine, slow], vec![never]],
            &settings(),
            &control,
            &output,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(error.contains("slow was not ready within 2 s"), "{error}");
        assert!(
            error.contains("booting") && error.contains("cannot connect"),
            "{error}"
        );
        output.flush().await;
        let err = err.text();
        assert!(!err.contains("never"), "the next stage never starts: {err}");
        assert!(err.contains("stopping the others"), "{err}");
    }

    #[tokio::test]
    async fn a_child_that_exits_while_starting_fails_the_start_with_its_last_lines() {
        let (output, _out, _err) = captured();
        let control = Control::default();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut broken = sh(
            "broken",
            "echo 'error: cannot reach the database' >&2; exit 1",
        );
        broken.health = Some(closed);
        let mut waiting = sh("waiting", "exec sleep 30");
        waiting.health = Some(closed);
        let error = supervise(vec![vec![waiting, broken]], &settings(), &control, &output)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("broken exited with exit status: 1"),
            "{error}"
        );
        assert!(error.contains("cannot reach the database"), "{error}");
    }

    #[tokio::test]
    async fn dropping_the_supervisor_kills_the_children() {
        let (output, out, _err) = captured();
        let control = Control::default();
        let pid_file = tempfile::NamedTempFile::new().unwrap();
        let script = format!(
            "echo $$ > {}; echo up; exec sleep 30",
            pid_file.path().display()
        );
        let task = tokio::spawn({
            let output = output.clone();
            async move {
                supervise(
                    vec![vec![sh("orphan", &script)]],
                    &settings(),
                    &control,
                    &output,
                )
                .await
            }
        });
        until("the child", || out.text().contains("orphan | up")).await;
        let pid: u32 = std::fs::read_to_string(pid_file.path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        task.abort();
        drop(task.await);
        until("the child to die", || {
            // A zombie until reaped by the runtime's orphan reaper: count that as gone.
            gone(pid)
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
        })
        .await;
    }
}
