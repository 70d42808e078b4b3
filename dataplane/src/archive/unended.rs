//! Sessions an earlier run left open. A run that stops writes a `dataplane-stopped` marker
//! once its listeners are closed (its open sessions may still write after it, but no session
//! starts); at start, every session whose `session_start` is in the local log with no
//! `session_end` after it is ended with one, whose reason says whether that run stopped (a
//! marker follows the last `session_start`) or ended without stopping (`crash`: killed, or
//! its machine failed).
//!
//! Invariants: only the local log is read, so a session whose start was shipped and whose log
//! file was deleted before the run ended is not found (its start stays in the archive
//! without an end); each session found gets exactly one `session_end`, among the first
//! records of the new run, in the order the sessions started; only records that may start
//! or end a session, or be the marker, are decoded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aho_corasick::AhoCorasick;

use super::draft::Draft;
use super::error::ArchiveError;
use super::fs::Filesystem;
use super::log::ArchiveLog;
use super::record::{Body, Record};
use super::wal::Wal;

/// The `system` event a run that stops writes last.
pub const STOPPED: &str = "dataplane-stopped";

/// What an earlier run left open.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unended {
    /// Sessions started and not ended, as `(conversation, session)`, in the order they
    /// started.
    pub sessions: Vec<(String, String)>,
    /// Whether that run stopped (a marker follows the last session's start).
    pub stopped: bool,
}

/// Reads the log in `dir` for sessions it leaves open.
pub fn find<F: Filesystem>(fs: &F, dir: &Path) -> Result<Unended, ArchiveError> {
    let patterns = AhoCorasick::new([
        "\"type\":\"session_start\"",
        "\"type\":\"session_end\"",
        "\"type\":\"system\"",
    ])
    .map_err(|error| ArchiveError::Failed(format!("the session matcher: {error}")))?;
    let mut started: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut by_session: HashMap<String, u64> = HashMap::new();
    let mut stopped = false;
    let mut broken = None;
    Wal::read_range(fs, dir, 1, u64::MAX, &mut |seq, payload| {
        if !patterns.is_match(payload) {
            return true;
        }
        let record: Record = match serde_json::from_slice(payload) {
            Ok(record) => record,
            Err(error) => {
                broken = Some(ArchiveError::corrupt(
                    dir,
                    seq,
                    format!("record {seq} is not a record: {error}"),
                ));
                return false;
            }
        };
        match record.body {
            Body::SessionStart { session, .. } => {
                stopped = false;
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
            Body::System { event, .. } if event == STOPPED => stopped = true,
            _ => {}
        }
        true
    })?;
    if let Some(error) = broken {
        return Err(error);
    }
    Ok(Unended {
        sessions: started.into_values().collect(),
        stopped,
    })
}

/// Ends every session in `unended` with a `session_end` record by `writer` for `tenant`, and
/// waits until they are durable; returns how many.
pub fn end(
    log: &ArchiveLog,
    tenant: &str,
    writer: &str,
    unended: &Unended,
) -> Result<usize, ArchiveError> {
    let reason = if unended.stopped {
        "imgate stopped while the session was open"
    } else {
        "crash: imgate ended without stopping (killed, or its machine failed) while the session was open"
    };
    let mut last = None;
    for (conv, session) in &unended.sessions {
        let body = Body::SessionEnd {
            session: session.clone(),
            reason: reason.to_owned(),
        };
        last = Some(log.append_draft(&Draft::new(tenant, writer, conv, &body))?);
    }
    if let Some(last) = last {
        log.wait_durable(last)?;
    }
    Ok(unended.sessions.len())
}

/// Writes the marker that this run stops, once no session can start any more, and waits until
/// it is durable.
pub fn mark_stopped(log: &ArchiveLog, tenant: &str, writer: &str) -> Result<(), ArchiveError> {
    let body = Body::System {
        event: STOPPED.into(),
        detail: "sessions still open are ended when imgate starts again on this data folder".into(),
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

    /// Sessions a, b and c start, b ends; the run then stops or not.
    fn earlier_run(dir: &Path, stops: bool) {
        let (log, _) = ArchiveLog::open(StdFs, dir, LogConfig::default()).expect("open");
        for session in ["a", "b", "c"] {
            start(&log, session);
        }
        if stops {
            mark_stopped(&log, "acme", "dp-0").expect("marker");
        }
        // An open session may still write after the marker.
        stop(&log, "b");
        log.close();
    }

    #[test]
    fn a_killed_run_leaves_sessions_that_the_next_ends_as_a_crash_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        earlier_run(dir.path(), false);
        let unended = find(&StdFs, dir.path()).expect("scan");
        assert_eq!(
            unended,
            Unended {
                sessions: vec![("a".into(), "a".into()), ("c".into(), "c".into())],
                stopped: false
            }
        );
        let (log, _) = ArchiveLog::open(StdFs, dir.path(), LogConfig::default()).expect("open");
        assert_eq!(end(&log, "acme", "dp-0", &unended).expect("ended"), 2);
        log.close();
        let ends = ends(dir.path());
        assert_eq!(ends.len(), 3, "{ends:?}");
        assert!(
            ends[1..]
                .iter()
                .all(|(_, reason)| reason.starts_with("crash:"))
        );
        assert_eq!(
            find(&StdFs, dir.path()).expect("scan").sessions,
            [],
            "ended once: a second start finds nothing"
        );
    }

    #[test]
    fn a_stopped_run_is_told_from_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        earlier_run(dir.path(), true);
        let unended = find(&StdFs, dir.path()).expect("scan");
        assert!(unended.stopped);
        assert_eq!(unended.sessions.len(), 2);
        let (log, _) = ArchiveLog::open(StdFs, dir.path(), LogConfig::default()).expect("open");
        end(&log, "acme", "dp-0", &unended).expect("ended");
        log.close();
        assert!(
            ends(dir.path())[1..]
                .iter()
                .all(|(_, reason)| reason == "imgate stopped while the session was open")
        );
    }
}
