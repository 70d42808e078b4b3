//! Sessions an earlier run left open. A run that stops writes a `dataplane-stopped` marker
//! naming itself once its listeners are closed; at start, every session whose
//! `session_start` is in the local log with no `session_end` after it is ended with one, whose
//! reason says whether the session's run stopped (a marker names it) or ended without
//! stopping (`crash`: killed, or its machine failed). A session's run is in its name
//! (`<writer>-<run>-<number>`), so a session admitted while its run was stopping is still
//! told apart from a crash.
//!
//! Invariants: only the local log is read, so a session whose start was shipped and whose log
//! file was deleted before the run ended is not found (its start stays in the archive
//! without an end); each session found gets exactly one `session_end`, among the first
//! records of the new run, in the order the sessions started; only records that may start
//! or end a session, or be a marker, are decoded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use aho_corasick::AhoCorasick;

use super::draft::Draft;
use super::error::ArchiveError;
use super::fs::Filesystem;
use super::log::ArchiveLog;
use super::record::{Body, Record};
use super::wal::Wal;

/// The `system` event a run that stops writes.
pub const STOPPED: &str = "dataplane-stopped";

/// A session an earlier run left open.
#[derive(Debug, PartialEq, Eq)]
pub struct Open {
    /// Its conversation.
    pub conv: String,
    /// Its name.
    pub session: String,
    /// Whether its run stopped (else it crashed).
    pub stopped: bool,
}

/// The run a session's name (`<writer>-<run>-<number>`) gives.
fn run_of(session: &str) -> Option<&str> {
    let mut parts = session.rsplitn(3, '-');
    parts.next()?;
    let run = parts.next()?;
    parts.next().map(|_| run)
}

/// The marker's detail for `run`, which [`find`] reads back.
fn marker_detail(run: &str) -> String {
    format!("run {run}: sessions still open are ended when imgate starts again on this data folder")
}

/// Reads the log in `dir` for sessions earlier runs left open, in the order they started.
pub fn find<F: Filesystem>(fs: &F, dir: &Path) -> Result<Vec<Open>, ArchiveError> {
    let patterns = AhoCorasick::new([
        "\"type\":\"session_start\"",
        "\"type\":\"session_end\"",
        "\"type\":\"system\"",
    ])
    .map_err(|error| ArchiveError::Failed(format!("the session matcher: {error}")))?;
    let mut started: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut by_session: HashMap<String, u64> = HashMap::new();
    let mut stopped_runs: HashSet<String> = HashSet::new();
    let mut broken = None;
    Wal::read_range(fs, dir, 1, u64::MAX, &mut |seq, payload| {
        if !patterns.is_match(payload) {
            return true;
        }
        let record: Record = match serde_json::from_slice(payload) {
            Ok(record) => record,
            Err(error) => {
                broken = Some(ArchiveError::Failed(format!(
                    "record {seq} of the log in {} cannot be read: {error}",
                    dir.display()
                )));
                return false;
            }
        };
        match record.body {
            Body::SessionStart { session, .. } => {
                if let Some(earlier) = by_session.insert(session.clone(), seq) {
                    started.remove(&earlier);
                }
                started.insert(seq, (record.conv, session));
            }
            Body::SessionEnd { session, .. } => {
                if let Some(start) = by_session.remove(&session) {
                    started.remove(&start);
                }
            }
            Body::System { event, detail } if event == STOPPED => {
                if let Some(run) = detail
                    .strip_prefix("run ")
                    .and_then(|rest| rest.split(':').next())
                {
                    stopped_runs.insert(run.to_owned());
                }
            }
            _ => {}
        }
        true
    })?;
    if let Some(error) = broken {
        return Err(error);
    }
    Ok(started
        .into_values()
        .map(|(conv, session)| {
            let stopped = run_of(&session).is_some_and(|run| stopped_runs.contains(run));
            Open {
                conv,
                session,
                stopped,
            }
        })
        .collect())
}

/// Ends every session in `open` with a `session_end` record by `writer` for `tenant`, and
/// waits until they are durable; returns how many.
pub fn end(
    log: &ArchiveLog,
    tenant: &str,
    writer: &str,
    open: &[Open],
) -> Result<usize, ArchiveError> {
    let mut last = None;
    for session in open {
        let reason = if session.stopped {
            "imgate stopped while the session was open"
        } else {
            "crash: imgate ended without stopping (killed, or its machine failed) while the session was open"
        };
        let body = Body::SessionEnd {
            session: session.session.clone(),
            reason: reason.to_owned(),
        };
        last = Some(log.append_draft(&Draft::new(tenant, writer, &session.conv, &body))?);
    }
    if let Some(last) = last {
        log.wait_durable(last)?;
    }
    Ok(open.len())
}

/// Writes the marker that run `run` stops, once no session can be accepted any more, and
/// waits until it is durable.
pub fn mark_stopped(
    log: &ArchiveLog,
    tenant: &str,
    writer: &str,
    run: &str,
) -> Result<(), ArchiveError> {
    let body = Body::System {
        event: STOPPED.into(),
        detail: marker_detail(run),
    };
    let seq = log.append_draft(&Draft::new(tenant, writer, "archive", &body))?;
    log.wait_durable(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::fs::StdFs;
    use crate::archive::log::LogConfig;

    fn start(log: &ArchiveLog, session: &str) {
        let body = Body::SessionStart {
            session: session.into(),
            connector: None,
            client: "127.0.0.1:5000".into(),
            server: "chat.example:5222".into(),
            protocol: imgate_crds::policy::Protocol::Xmpp,
            handle: None,
            tls: None,
        };
        log.append_draft(&Draft::new("acme", "dp-0", session, &body))
            .expect("append");
    }

    fn stop(log: &ArchiveLog, session: &str) {
        let body = Body::SessionEnd {
            session: session.into(),
            reason: "closed".into(),
        };
        let seq = log
            .append_draft(&Draft::new("acme", "dp-0", session, &body))
            .expect("append");
        log.wait_durable(seq).expect("durable");
    }

    /// Every `session_end` in the log: `(session, reason)`.
    fn ends(dir: &Path) -> Vec<(String, String)> {
        let mut ends = Vec::new();
        Wal::read_range(&StdFs, dir, 1, u64::MAX, &mut |_, payload| {
            let record: Record = serde_json::from_slice(payload).expect("record");
            if let Body::SessionEnd { session, reason } = record.body {
                ends.push((session, reason));
            }
            true
        })
        .expect("read");
        ends
    }

    /// Run `run` of writer dp-0 starts sessions 1, 2 and 3 and ends 2; when it `stops`, its
    /// marker comes before session 3 starts (admitted while the run was stopping) and 2 ends.
    fn earlier_run(dir: &Path, run: &str, stops: bool) {
        let (log, _) = ArchiveLog::open(StdFs, dir, LogConfig::default()).expect("open");
        start(&log, &format!("dp-0-{run}-1"));
        start(&log, &format!("dp-0-{run}-2"));
        if stops {
            mark_stopped(&log, "acme", "dp-0", run).expect("marker");
        }
        start(&log, &format!("dp-0-{run}-3"));
        stop(&log, &format!("dp-0-{run}-2"));
        log.close();
    }

    fn reopen_and_end(dir: &Path) -> usize {
        let open = find(&StdFs, dir).expect("scan");
        let (log, _) = ArchiveLog::open(StdFs, dir, LogConfig::default()).expect("open");
        let ended = end(&log, "acme", "dp-0", &open).expect("ended");
        log.close();
        ended
    }

    #[test]
    fn a_killed_run_leaves_sessions_that_the_next_ends_as_a_crash_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        earlier_run(dir.path(), "k1", false);
        let open = find(&StdFs, dir.path()).expect("scan");
        let names: Vec<&str> = open.iter().map(|o| o.session.as_str()).collect();
        assert_eq!(names, ["dp-0-k1-1", "dp-0-k1-3"]);
        assert!(open.iter().all(|o| !o.stopped && o.conv == o.session));
        assert_eq!(reopen_and_end(dir.path()), 2);
        let ends = ends(dir.path());
        assert_eq!(ends.len(), 3, "{ends:?}");
        assert!(
            ends[1..]
                .iter()
                .all(|(_, reason)| reason.starts_with("crash:"))
        );
        assert_eq!(
            find(&StdFs, dir.path()).expect("scan"),
            [],
            "ended once: a second start finds nothing"
        );
    }

    #[test]
    fn a_stopped_run_is_told_from_a_crash_also_for_a_session_admitted_as_it_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        earlier_run(dir.path(), "s1", true);
        earlier_run(dir.path(), "k2", false);
        assert_eq!(reopen_and_end(dir.path()), 4);
        let ends = ends(dir.path());
        let reason = |session: &str| {
            ends.iter()
                .find(|(s, _)| s == session)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        for session in ["dp-0-s1-1", "dp-0-s1-3"] {
            assert_eq!(reason(session), "imgate stopped while the session was open");
        }
        for session in ["dp-0-k2-1", "dp-0-k2-3"] {
            assert!(reason(session).starts_with("crash:"), "{session}");
        }
    }

    #[test]
    fn a_run_is_read_from_a_session_name() {
        assert_eq!(run_of("dataplane-0-mxbr20cq-17"), Some("mxbr20cq"));
        assert_eq!(run_of("local-0-1"), Some("0"));
        assert_eq!(run_of("odd"), None);
    }
}
