//! Output: every child's lines behind a (colored) name prefix, each line whole, from
//! one writer thread per stream; the last lines of each child are kept to explain a
//! failed start.

use std::collections::VecDeque;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How many of a child's last output lines are kept to explain a failed start.
const TAIL_LINES: usize = 30;

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

chassis::debug_fields!(Output {});

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

    /// Copies `child`'s stdout and stderr, line by line behind its `name` (padded to
    /// `width`, colored by its `index`), to ours, keeping its last lines in `tail`.
    /// Returns the copying tasks: they end when the child's pipes close.
    pub(crate) fn attach(
        &self,
        child: &mut Child,
        name: &str,
        width: usize,
        index: usize,
        tail: &Tail,
    ) -> Vec<JoinHandle<()>> {
        let color = COLORS[index % COLORS.len()];
        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let prefix = prefix(name, width, self.color_out.then_some(color));
            pumps.push(tokio::spawn(pump(
                stdout,
                prefix,
                self.out.clone(),
                Arc::clone(tail),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            let prefix = prefix(name, width, self.color_err.then_some(color));
            pumps.push(tokio::spawn(pump(
                stderr,
                prefix,
                self.err.clone(),
                Arc::clone(tail),
            )));
        }
        pumps
    }
}

/// The name colors, one per child in turn (ANSI SGR codes).
const COLORS: [&str; 8] = ["36", "32", "33", "35", "34", "96", "92", "95"];

/// `name` padded to `width`, then ` | `; the name colored when `color` is given.
fn prefix(name: &str, width: usize, color: Option<&str>) -> Vec<u8> {
    match color {
        Some(code) => format!("\x1b[{code}m{name:<width$} |\x1b[0m ").into_bytes(),
        None => format!("{name:<width$} | ").into_bytes(),
    }
}

/// `line` (with or without its `\n`) behind `prefix`, ending in exactly one `\n`.
fn prefixed(prefix: &[u8], line: &[u8]) -> Vec<u8> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let mut out = Vec::with_capacity(prefix.len() + body.len() + 1);
    out.extend_from_slice(prefix);
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

/// A child's last output lines (at most [`TAIL_LINES`]).
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
