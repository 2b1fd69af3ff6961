//! Supervision: starts stages of children in order, each stage once the previous one
//! is ready, reports the ones that exit, and stops them in reverse order. It knows
//! nothing of bazaar: the tests drive it with `sh`.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::DevError;
use crate::child::{Ctl, Exit, Running, Spec, probe_ready, spawn};
use crate::output::Output;

/// How patient the supervisor is, and what it prints once everything is up.
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
                let child = &self.children[index];
                if let Some(addr) = child.health {
                    if !probe_ready(addr, child.health_tls.as_ref()).await {
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
    async fn run(&mut self) -> Result<(), DevError> {
        loop {
            if self.children.iter().all(|c| c.exited) {
                return Err(DevError::AllExited);
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
) -> Result<Vec<Ended>, DevError> {
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
                    failure = Some(e);
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
                failure = Some(DevError::NotStarted(message));
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
    if let Some(error) = failure {
        return Err(error);
    }
    result?;
    Ok(supervisor.ended())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::process::Command;

    use super::*;

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
            health_tls: None,
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
        assert!(probe_ready(always_ready().await, None).await);
        let closed = testkit::closed_addr();
        assert!(!probe_ready(closed, None).await);
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
        let closed = testkit::closed_addr();
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
        let closed = testkit::closed_addr();
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
