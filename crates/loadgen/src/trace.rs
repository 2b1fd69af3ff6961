//! `--trace FILE`: one JSON line per answer (warmup included), for tools that need
//! more than the report's totals: the chaos harness (bench/chaos.sh) cuts them into
//! fault windows and follows every order a checkout was given.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::LoadgenError;
use crate::scheduler::Step;

/// One line of the trace.
#[derive(Debug, Serialize)]
struct Line<'a> {
    /// When the answer ended, in milliseconds since the Unix epoch.
    at_ms: u64,
    op: &'static str,
    /// The HTTP status; absent for a transport error (refused, reset, timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    latency_us: u64,
    /// A checkout's order, when its answer (201 or 202) carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a str>,
}

pub(crate) struct Trace {
    path: PathBuf,
    /// Line-buffered: a trace is whole up to the last answer even when loadgen is
    /// killed (the chaos harness ends its load that way).
    out: Mutex<std::io::LineWriter<std::fs::File>>,
}

impl Trace {
    pub(crate) fn create(path: &Path) -> Result<Self, LoadgenError> {
        let file = std::fs::File::create(path).map_err(|source| LoadgenError::Write {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            out: Mutex::new(std::io::LineWriter::new(file)),
        })
    }

    /// Appends `step`, answered after `latency`. A write error is kept for
    /// [`Trace::finish`] (the run goes on: the report does not depend on the trace).
    pub(crate) fn write(&self, step: &Step, latency: Duration) {
        let ended = SystemTime::now()
            .checked_sub(step.finished.elapsed())
            .unwrap_or(UNIX_EPOCH);
        let line = Line {
            at_ms: ended
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            op: step.op.name(),
            status: step.status,
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            order: step.order_id.as_deref(),
        };
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // serde_json cannot fail on this struct; a full disk shows up at the flush.
        let _ = serde_json::to_writer(&mut *out, &line);
        let _ = out.write_all(b"\n");
    }

    pub(crate) fn finish(&self) -> Result<(), LoadgenError> {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
            .map_err(|source| LoadgenError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use loadreport::StatusClass;
    use tokio::time::Instant;

    use super::*;
    use crate::mix::Operation;

    #[test]
    fn one_json_line_per_answer_with_the_order_of_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let trace = Trace::create(&path).unwrap();
        let step = |op, class, status, order_id: Option<&str>| Step {
            op,
            class,
            status,
            order_id: order_id.map(str::to_owned),
            finished: Instant::now(),
            order: None,
        };
        trace.write(
            &step(
                Operation::Checkout,
                StatusClass::S2xx,
                Some(202),
                Some("ord_1"),
            ),
            Duration::from_millis(12),
        );
        trace.write(
            &step(Operation::Listing, StatusClass::Transport, None, None),
            Duration::from_micros(5),
        );
        trace.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["op"], "checkout");
        assert_eq!(lines[0]["status"], 202);
        assert_eq!(lines[0]["order"], "ord_1");
        assert_eq!(lines[0]["latency_us"], 12_000);
        assert!(lines[0]["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(lines[1]["op"], "listing");
        assert!(lines[1].get("status").is_none());
        assert!(lines[1].get("order").is_none());
    }
}
