//! The log's file work that may wait on the disk (making the next file ready, deleting shipped
//! files) is done without the log's lock: producers that write for themselves keep writing
//! while it is held up, and the log stays whole and in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::faulty::{FaultyFs, Gate};
use super::fs::{Filesystem, StdFs};
use super::record::tests::message;
use super::tests::draft;
use super::wal::{Housekeeping, SyncFile, Wal};
use super::*;

/// Small files, so that a few records fill one.
fn config() -> LogConfig {
    LogConfig {
        max_unshipped_bytes: 64 << 20,
        max_file_bytes: 4096,
        ..LogConfig::default()
    }
}

/// The log's files, oldest first.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    StdFs
        .list(dir)
        .expect("list")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect()
}

/// The sequence numbers in the log, in order.
fn seqs(dir: &Path) -> Vec<u64> {
    let mut seqs = Vec::new();
    Wal::read_range(&StdFs, dir, 1, u64::MAX, &mut |seq, _| {
        seqs.push(seq);
        true
    })
    .expect("readable");
    seqs
}

/// Queues one record, as sessions do, and has the calling thread write it; returns whether
/// it did (`false`: it had to hand the record to the writer thread).
fn write_for_myself(log: &ArchiveLog, text: &str) -> bool {
    let seq = log.queue(&draft(text)).expect("the log takes records");
    log.write_now(seq).expect("the log works")
}

/// Waits until `done` holds; the log's threads are not held up, so it holds soon.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_file_takes_appends_while_the_next_is_made_ready_and_a_leftover_spare_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config()).expect("open");
    assert!(write_for_myself(&log, "the first file is opened"));
    let gate = Arc::new(Gate::default());
    fs.faults.lock().expect("lock").hold_reserve = Some(gate.clone());
    let mut written = 1;
    while log_files(dir.path())
        .iter()
        .all(|f| std::fs::metadata(f).expect("file").len() < 4096)
    {
        assert!(write_for_myself(&log, "filling the first file"));
        written += 1;
    }
    gate.reached();
    for i in 0..40 {
        assert!(
            write_for_myself(&log, &format!("while the next file is made ready {i}")),
            "record {i} waited for the writer thread"
        );
    }
    written += 40;
    let files = log_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "no rotation while the next file is not ready"
    );
    assert!(std::fs::metadata(&files[0]).expect("file").len() > 4096);
    gate.open();
    wait_until("the full file is rotated", || {
        log_files(dir.path()).len() == 2
    });
    let seq = log.append(|seq| message(seq, "after")).expect("append");
    log.wait_durable(seq).expect("durable");
    log.close();
    assert_eq!(seqs(dir.path()), (1..=written + 1).collect::<Vec<_>>());
    assert_eq!(
        log_files(dir.path())[1],
        dir.path().join(format!("{:020}.wal", written + 1)),
        "the spare was renamed for the next sequence number"
    );

    let spare = dir.path().join("next/spare.wal");
    let mut junk = Vec::new();
    super::wal::encode_frame(1, b"never part of the log", &mut junk);
    std::fs::write(&spare, &junk).expect("a spare left by a crash");
    let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("reopen");
    assert_eq!(recovery.last_seq, written + 1);
    assert!(!spare.exists(), "the leftover spare is removed on opening");
    let mut last = 0;
    for i in 0..60 {
        last = log
            .append(|seq| message(seq, &format!("reopened {i}")))
            .expect("append");
        log.wait_durable(last).expect("durable");
    }
    log.close();
    assert!(log_files(dir.path()).len() > 2, "the log rotated again");
    assert_eq!(seqs(dir.path()), (1..=last).collect::<Vec<_>>());
}

#[test]
fn shipped_files_are_deleted_while_producers_keep_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config()).expect("open");
    let mut last = 0;
    while log_files(dir.path()).len() < 4 {
        last = log.append(|seq| message(seq, "filling")).expect("append");
        log.wait_durable(last).expect("durable");
    }
    let files = log_files(dir.path());
    let third: u64 = files[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("named by its first record");
    let before = log.unshipped_bytes();
    let gate = Arc::new(Gate::default());
    fs.faults.lock().expect("lock").hold_remove = Some(gate.clone());
    log.release_through(third - 1);
    gate.reached();
    assert!(
        log.unshipped_bytes() < before,
        "released files no longer count against the limit"
    );
    for i in 0..20 {
        assert!(
            write_for_myself(&log, &format!("while a file is deleted {i}")),
            "record {i} waited for the writer thread"
        );
    }
    last += 20;
    assert_eq!(
        log_files(dir.path()),
        files,
        "nothing deleted or rotated while the writer thread is held up"
    );
    gate.open();
    wait_until("the shipped files are deleted", || {
        !files[0].exists() && !files[1].exists()
    });
    log.close();
    assert_eq!(log_files(dir.path())[0], files[2], "the oldest went first");
    assert_eq!(seqs(dir.path()), (third..=last).collect::<Vec<_>>());
    let (_, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("reopen");
    assert_eq!(recovery.last_seq, last);
}

#[test]
fn a_file_renamed_into_place_has_its_name_synced_before_its_records_count_as_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let dir_syncs = || fs.faults.lock().expect("lock").dir_syncs;
    let (mut wal, _) = Wal::open(fs.clone(), dir.path(), 100).expect("open");
    let housekeeper = wal.housekeeper();
    assert!(wal.append_batch(&[(1, vec![b'a'; 200])]).expect("append"));
    housekeeper.prepare_spare().expect("spare");
    wal.rotate().expect("rotate").expect("a new file");
    assert_eq!(dir_syncs(), 0, "the first file was created, not renamed");
    wal.append_batch(&[(2, vec![b'b'; 200])]).expect("append");
    housekeeper.prepare_spare().expect("spare");
    let mut handle = wal.rotate().expect("rotate").expect("a new file");
    assert_eq!(
        dir_syncs(),
        1,
        "rotating syncs the full file's name, renamed into place and never synced"
    );
    handle.sync().expect("sync");
    assert_eq!(dir_syncs(), 2, "the new file's first sync syncs its name");
    handle.sync().expect("sync");
    wal.sync().expect("sync");
    assert_eq!(dir_syncs(), 2, "and only its first");
    assert_eq!(
        log_files(dir.path()),
        [1, 2, 3].map(|seq| dir.path().join(format!("{seq:020}.wal")))
    );
}

#[test]
fn shipped_records_stop_counting_as_unshipped_though_their_file_is_still_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || LogConfig {
        max_file_bytes: 1 << 20,
        ..config()
    };
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    let mut last = 0;
    for i in 0..10 {
        last = log
            .append(|seq| message(seq, &format!("record {i}")))
            .expect("append");
    }
    log.wait_durable(last).expect("durable");
    let all = log.unshipped_bytes();
    let mut first_five = 0;
    Wal::read_range(&StdFs, dir.path(), 1, 5, &mut |_, payload| {
        first_five += (payload.len() + wal::FRAME_HEADER) as u64;
        true
    })
    .expect("readable");
    assert_eq!(log_files(dir.path()).len(), 1, "one file, still written");
    // Closing has the writer thread take the release in first.
    log.release_through(5);
    log.close();
    assert_eq!(log.unshipped_bytes(), all - first_five);

    // After a restart, the first release measures the file from its start.
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open again");
    assert_eq!(
        log.unshipped_bytes(),
        all,
        "nothing released yet in this run"
    );
    log.release_through(last);
    log.close();
    assert_eq!(log.unshipped_bytes(), 0);
    assert_eq!(
        log_files(dir.path()).len(),
        1,
        "the file is kept until it is full"
    );
}

#[test]
fn a_hold_keeps_shipped_records_in_the_log_until_the_reader_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    log.hold_after(0);
    let mut last = 0;
    for i in 0..60 {
        last = log
            .append(|seq| message(seq, &format!("record {i}")))
            .expect("append");
        log.wait_durable(last).expect("durable");
    }
    let files = log_files(dir.path()).len();
    assert!(files > 3, "the records fill several files: {files}");
    let all = log.unshipped_bytes();

    log.release_through(last);
    // A release is taken in by the writer thread: a durable wait is ordered after it.
    let next = log.append(|seq| message(seq, "after")).expect("append");
    log.wait_durable(next).expect("durable");
    assert_eq!(seqs(dir.path()).first(), Some(&1), "everything is held");
    assert!(
        log.unshipped_bytes() >= all,
        "held records count as unshipped"
    );

    log.hold_after(30);
    log.close();
    let kept = seqs(dir.path());
    let first = kept.first().copied().unwrap_or_default();
    assert!(
        first > 1 && first <= 31,
        "files before the hold went, record 31 stayed: {first}"
    );
    assert_eq!(kept.last(), Some(&next));
}
