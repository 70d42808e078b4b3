//! A writer killed with SIGKILL in the middle of heavy writes, three times over: after each
//! restart every acknowledged record is there, exactly once, and numbering continues.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::record::{Body, Record};
use imgate_dataplane::archive::wal::Wal;
use imgate_dataplane::archive::{ArchiveLog, LogConfig};

const WRITERS: usize = 8;

fn system(seq: u64, text: String) -> Record {
    Record {
        v: 1,
        tenant: "acme".into(),
        writer: "dp-0".into(),
        seq,
        ts: chrono::Utc::now(),
        conv: "crash".into(),
        body: Body::System {
            event: "test".into(),
            detail: text,
        },
    }
}

/// The child: appends from several threads as fast as it can and prints `ack SEQ TEXT` for
/// each record once it is durable. Run by the test below, never on its own.
#[test]
#[ignore = "run as a child process by sigkill_during_heavy_writes_loses_and_duplicates_nothing"]
fn child_writer() {
    let dir = std::env::var("IMGATE_CRASH_DIR").expect("IMGATE_CRASH_DIR names the log folder");
    let round = std::env::var("IMGATE_CRASH_ROUND").unwrap_or_default();
    let (log, _) = ArchiveLog::open(
        StdFs,
        Path::new(&dir),
        LogConfig {
            max_file_bytes: 256 << 10,
            ..LogConfig::default()
        },
    )
    .expect("open");
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = log.clone();
            let round = round.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let text = format!("round {round} writer {writer} message {i}");
                    let seq = log.append(|seq| system(seq, text.clone())).expect("append");
                    log.wait_durable(seq).expect("durable");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {seq} {text}");
                    let _ = out.flush();
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

#[test]
fn sigkill_during_heavy_writes_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("IMGATE_CRASH_DIR", dir.path())
            .env("IMGATE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let target = 3000 + round * 1000;
        let mut acks = 0;
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ack ") {
                let (seq, text) = rest.split_once(' ').expect("ack SEQ TEXT");
                acknowledged.push((seq.parse().expect("seq"), text.to_owned()));
                acks += 1;
                if acks == target {
                    child.kill().expect("SIGKILL");
                }
            }
        }
        let _ = child.wait();
        assert!(
            acks >= target,
            "round {round}: the child stopped early after {acks} acknowledgements"
        );

        let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), LogConfig::default())
            .expect("recovers after SIGKILL");
        log.close();
        let mut stored: Vec<(u64, String)> = Vec::new();
        Wal::read_range(&StdFs, dir.path(), 1, u64::MAX, &mut |seq, payload| {
            let record: Record =
                serde_json::from_slice(payload).expect("every stored record parses");
            assert_eq!(record.seq, seq);
            let Body::System { detail, .. } = record.body else {
                panic!("unexpected record")
            };
            stored.push((seq, detail));
            true
        })
        .expect("readable");
        assert_eq!(stored.len() as u64, recovery.records);
        assert!(
            stored
                .iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as u64 + 1),
            "round {round}: sequence has gaps"
        );
        let texts: BTreeSet<&String> = stored.iter().map(|(_, t)| t).collect();
        assert_eq!(
            texts.len(),
            stored.len(),
            "round {round}: a record was stored twice"
        );
        let stored: BTreeSet<&(u64, String)> = stored.iter().collect();
        let lost: Vec<&(u64, String)> = acknowledged
            .iter()
            .filter(|a| !stored.contains(a))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged records lost: {:?}",
            &lost[..lost.len().min(5)]
        );
    }
}
