//! CPU time of named processes over the measured window, read from `/proc` (Linux):
//! what the servers spent per request (`--cpu-pid bazaar=PID`, repeatable; PIDs of one
//! name are summed), and what loadgen itself spent, so a run where the load generator
//! ran out of CPU can be told from one where the server did.
//!
//! Sampled at the start and at the end of the measured window, so neither the set-up
//! (user registrations hash passwords, which costs far more than a request) nor the
//! warmup counts.

use std::collections::BTreeMap;

use loadreport::{CpuGroup, CpuReport};

/// The unit of utime/stime in `/proc/<pid>/stat`: USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SEC: f64 = 100.0;
/// The group loadgen's own CPU is reported under.
pub(crate) const LOADGEN: &str = "loadgen";

/// One process to watch, and the group it is summed into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watch {
    pub(crate) group: String,
    pub(crate) pid: u32,
}

/// `NAME=PID`, e.g. `bazaar=1234`.
pub(crate) fn parse_watch(text: &str) -> Result<Watch, String> {
    let (group, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PID, e.g. bazaar=1234"))?;
    let group = group.trim();
    if group.is_empty() || group == LOADGEN {
        return Err(format!(
            "{text:?}: the name must be set and not {LOADGEN:?}"
        ));
    }
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {pid:?} is not a process id"))?;
    Ok(Watch {
        group: group.to_owned(),
        pid,
    })
}

/// utime + stime (ticks) from the text of a `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`: state is then the first, utime the 12th, stime the 13th.
fn ticks_of_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU ticks of `pid` (this process when `None`); `None` when it is gone or
/// `/proc` is not there.
fn ticks(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    ticks_of_stat(&std::fs::read_to_string(path).ok()?)
}

/// The ticks of every watched process, and loadgen's own, at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    at: tokio::time::Instant,
    watched: Vec<Option<u64>>,
    own: Option<u64>,
}

pub(crate) fn sample(watches: &[Watch]) -> Sample {
    Sample {
        at: tokio::time::Instant::now(),
        watched: watches.iter().map(|w| ticks(Some(w.pid))).collect(),
        own: ticks(None),
    }
}

/// The window between two samples, `requests` the requests measured in it.
#[allow(clippy::cast_precision_loss)] // tick and request counts far below 2^52
pub(crate) fn report(
    watches: &[Watch],
    before: &Sample,
    after: &Sample,
    requests: u64,
) -> CpuReport {
    let window_secs = after.at.saturating_duration_since(before.at).as_secs_f64();
    let mut ticks: BTreeMap<String, (u64, CpuGroup)> = BTreeMap::new();
    let own = [(LOADGEN, before.own, after.own)];
    let watched = watches
        .iter()
        .zip(before.watched.iter().zip(&after.watched))
        .map(|(w, (b, a))| (w.group.as_str(), *b, *a));
    for (group, b, a) in watched.chain(own) {
        let entry = ticks.entry(group.to_owned()).or_default();
        match (b, a) {
            (Some(b), Some(a)) => {
                entry.0 += a.saturating_sub(b);
                entry.1.processes += 1;
            }
            _ => entry.1.unreadable += 1,
        }
    }
    let groups = ticks
        .into_iter()
        .map(|(name, (ticks, mut group))| {
            group.cpu_secs = ticks as f64 / TICKS_PER_SEC;
            group.cores = if window_secs > 0.0 {
                group.cpu_secs / window_secs
            } else {
                0.0
            };
            group.per_request_us = if requests > 0 {
                group.cpu_secs * 1e6 / requests as f64
            } else {
                0.0
            };
            (name, group)
        })
        .collect();
    CpuReport {
        window_secs,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn watches_are_name_equals_pid() {
        assert_eq!(
            parse_watch("bazaar=42"),
            Ok(Watch {
                group: "bazaar".into(),
                pid: 42
            })
        );
        assert!(parse_watch("42").is_err());
        assert!(parse_watch("=42").is_err());
        assert!(parse_watch("bazaar=x").is_err());
        assert!(parse_watch("loadgen=42").is_err());
    }

    #[test]
    fn utime_and_stime_are_counted_from_the_last_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0";
        assert_eq!(ticks_of_stat(stat), Some(325));
        assert_eq!(ticks_of_stat("4242 (short) S 1 2"), None);
        assert_eq!(ticks_of_stat("no parenthesis"), None);
    }

    #[test]
    fn groups_sum_their_processes_over_the_window() {
        let watches = [
            parse_watch("bazaar=1").unwrap(),
            parse_watch("bazaar=2").unwrap(),
            parse_watch("postgres=3").unwrap(),
        ];
        let at = tokio::time::Instant::now();
        let before = Sample {
            at,
            watched: vec![Some(100), Some(10), Some(5)],
            own: Some(1000),
        };
        let after = Sample {
            at: at + Duration::from_secs(2),
            watched: vec![Some(250), Some(60), None],
            own: Some(1100),
        };
        let cpu = report(&watches, &before, &after, 1000);
        assert!((cpu.window_secs - 2.0).abs() < 1e-9);
        let bazaar = &cpu.groups["bazaar"];
        assert_eq!((bazaar.processes, bazaar.unreadable), (2, 0));
        assert!((bazaar.cpu_secs - 2.0).abs() < 1e-9, "{bazaar:?}");
        assert!((bazaar.cores - 1.0).abs() < 1e-9, "{bazaar:?}");
        assert!((bazaar.per_request_us - 2000.0).abs() < 1e-6, "{bazaar:?}");
        let postgres = &cpu.groups["postgres"];
        assert_eq!((postgres.processes, postgres.unreadable), (0, 1));
        assert!(postgres.cpu_secs.abs() < 1e-9);
        assert!((cpu.groups[LOADGEN].cpu_secs - 1.0).abs() < 1e-9);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_can_be_read() {
        assert!(ticks(None).is_some());
        assert!(ticks(Some(std::process::id())).is_some());
    }
}
