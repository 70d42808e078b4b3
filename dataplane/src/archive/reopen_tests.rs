//! The log after a failure: it refuses records while it cannot write, writes again by itself
//! once it can (a full disk with space again, descriptors free again), loses nothing it had
//! numbered, and records each gap once, with what it refused; after a failed fsync it stays
//! failed until imgate restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fs::StdFs;
use super::fs::faulty::FaultyFs;
use super::record::tests::message;
use super::record::{Body, Record};
use super::segment::Layout;
use super::store::LocalStore;
use super::verify::verify;
use super::wal::Wal;
use super::*;

/// A log that tries to write again soon after a failure (`retry`).
fn config(retry: Duration) -> LogConfig {
    LogConfig {
        max_unshipped_bytes: 64 << 20,
        max_file_bytes: 4096,
        retry,
        origin: ("acme".into(), "dataplane-0".into()),
        ..LogConfig::default()
    }
}

/// A log on a filesystem with faults to inject, in a new folder.
fn faulty_log(retry: Duration) -> (tempfile::TempDir, FaultyFs, ArchiveLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config(retry)).expect("open");
    (dir, fs, log)
}

/// Every record in the log, in order.
fn records(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    Wal::read_range(&StdFs, dir, 1, u64::MAX, &mut |_, payload| {
        records.push(serde_json::from_slice(payload).expect("a record"));
        true
    })
    .expect("readable");
    records
}

/// What each record is: its text, or `gap <refused> <on_failure> <late>`.
fn told(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|record| match &record.body {
            Body::Message { text, .. } => text.clone(),
            Body::Gap {
                refused,
                on_failure,
                late,
                ..
            } => format!("gap {refused} {on_failure} {late:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Waits until `done` holds: the log's writer retries every few milliseconds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn append(log: &ArchiveLog, text: &str) -> Result<u64, ArchiveError> {
    log.append(|seq| message(seq, text))
}

/// Appends `count` records the log must refuse; returns how many it refused.
fn refused(log: &ArchiveLog, count: usize) -> usize {
    (0..count)
        .filter(|_| matches!(append(log, "refused"), Err(ArchiveError::Failed(_))))
        .count()
}

/// Waits until `log` writes again, writes "after", closes it and returns its records, checked
/// to be numbered in order.
fn after_recovery(log: &ArchiveLog, dir: &Path) -> Vec<Record> {
    wait_until("the log writes again", || log.failure().is_none());
    let after = append(log, "after").expect("the log takes records again");
    wait_until("the syncer syncs it without being asked", || {
        log.durable_seq() >= after
    });
    log.close();
    let records = records(dir);
    assert_numbered_in_order(&records);
    records
}

/// The numbers run on by one from the first (1 unless shipped files were deleted), with
/// none given twice.
fn assert_numbered_in_order(records: &[Record]) {
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let first = seqs.first().copied().unwrap_or(1);
    let expected: Vec<u64> = (first..first + records.len() as u64).collect();
    assert_eq!(seqs, expected);
}

#[test]
fn a_full_disk_refuses_records_until_there_is_space_and_the_gap_is_recorded_once() {
    let (dir, fs, log) = faulty_log(Duration::from_millis(2));
    let before = append(&log, "before").expect("queued");
    log.wait_durable(before).expect("durable");
    fs.faults.lock().expect("lock").space_left = Some(0);
    let kept = append(&log, "queued when the disk filled").expect("queued");
    let error = log.wait_durable(kept).expect_err("the disk is full");
    assert!(error.to_string().contains("No space left"), "{error}");
    assert_eq!(
        refused(&log, 20),
        20,
        "every try to write again fails while the disk is full, and the log refuses meanwhile"
    );
    assert!(log.failure().is_some(), "health checks see the failure");
    assert_eq!(log.refused(), 20);
    fs.faults.lock().expect("lock").space_left = None;
    let records = after_recovery(&log, dir.path());
    assert_eq!(
        told(&records),
        [
            "before",
            "queued when the disk filled",
            "gap 20 block Some([2, 2])",
            "after"
        ],
        "the record numbered before the failure is written, and the gap told once"
    );
    assert_gap(&records[2], "No space left on device");
}

/// `record` is a gap record of the log's writer, for `reason`, that ends when it was written.
fn assert_gap(record: &Record, reason: &str) {
    let Body::Gap {
        since, reason: why, ..
    } = &record.body
    else {
        panic!("not a gap record: {record:?}");
    };
    assert!(why.contains(reason), "{why}");
    assert_eq!(
        (
            record.tenant.as_str(),
            record.writer.as_str(),
            record.conv.as_str()
        ),
        ("acme", "dataplane-0", "archive")
    );
    let since = chrono::DateTime::parse_from_rfc3339(since).expect("a time");
    assert!(since <= record.ts, "the gap ends when it is recorded");
}

#[test]
fn a_rotation_at_the_open_file_limit_is_tried_again_once_descriptors_are_free() {
    let (dir, fs, log) = faulty_log(Duration::from_millis(2));
    let small = append(&log, "small").expect("queued");
    log.wait_durable(small).expect("durable");
    fs.faults.lock().expect("lock").fail_open = true;
    append(&log, &"fills the file ".repeat(400)).expect("queued");
    // Written to the open file, which needs no descriptor; the rotation it calls for fails.
    wait_until("the rotation fails", || log.failure().is_some());
    assert_eq!(refused(&log, 5), 5);
    fs.faults.lock().expect("lock").fail_open = false;
    let records = after_recovery(&log, dir.path());
    assert_eq!(told(&records)[2..], ["gap 5 block None", "after"]);
    assert_gap(&records[2], "Too many open files");
    assert!(
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal")))
            .count()
            >= 2,
        "the full file was rotated"
    );
}

#[test]
fn a_failed_fsync_stops_the_log_until_imgate_restarts() {
    let (dir, fs, log) = faulty_log(Duration::from_millis(2));
    fs.faults.lock().expect("lock").fail_sync = true;
    let written = append(&log, "written, not synced").expect("queued");
    log.wait_durable(written).expect_err("the fsync fails");
    assert_eq!(refused(&log, 3), 3);
    fs.faults.lock().expect("lock").fail_sync = false;
    // After a failed fsync the kernel may have dropped pages that reading the file would still
    // show, so the log does not reopen itself, however many retries pass: it says to restart.
    std::thread::sleep(Duration::from_millis(100));
    assert!(log.failed_for_good());
    assert!(
        log.failure()
            .is_some_and(|why| why.contains("restart imgate")),
        "{:?}",
        log.failure()
    );
    assert_eq!(refused(&log, 1), 1, "still refusing");
    log.close();
    let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), config(Duration::from_millis(2)))
        .expect("a restart opens the log again");
    assert_eq!(recovery.records, 1);
    let after = append(&log, "after").expect("the log takes records");
    log.wait_durable(after).expect("durable");
    log.close();
}

#[test]
fn records_refused_while_the_log_is_full_are_a_gap_recorded_before_the_next_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        max_unshipped_bytes: 2048,
        max_file_bytes: 512,
        forwards_refused: true,
        ..config(Duration::from_millis(2))
    };
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config).expect("open");
    let mut last = 0;
    let mut full = 0;
    while full == 0 {
        match append(&log, "fills the log") {
            Ok(seq) => last = seq,
            Err(ArchiveError::Full { .. }) => full += 1,
            Err(error) => panic!("{error}"),
        }
    }
    full += (0..4)
        .filter(|_| matches!(append(&log, "refused"), Err(ArchiveError::Full { .. })))
        .count();
    log.wait_durable(last).expect("durable");
    log.release_through(last);
    let after = loop {
        match append(&log, "after") {
            Ok(seq) => break seq,
            Err(ArchiveError::Full { .. }) => full += 1,
            Err(error) => panic!("{error}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    log.wait_durable(after).expect("durable");
    log.close();
    let records = records(dir.path());
    assert_numbered_in_order(&records);
    let told = told(&records);
    assert_eq!(
        told[told.len() - 2..],
        [format!("gap {full} pass None"), "after".to_owned()],
        "every refusal is counted, and the gap says what became of their events"
    );
    assert_gap(&records[records.len() - 2], "the archive log is full");
    assert_eq!(log.refused(), full as u64);
}

#[test]
fn a_log_closed_while_it_cannot_write_records_its_gap_if_it_can_at_the_end() {
    let (dir, fs, log) = faulty_log(Duration::from_secs(3600));
    fs.faults.lock().expect("lock").space_left = Some(0);
    let kept = append(&log, "kept").expect("queued");
    log.wait_durable(kept).expect_err("the disk is full");
    assert_eq!(refused(&log, 2), 2);
    fs.faults.lock().expect("lock").space_left = None;
    log.close();
    let records = records(dir.path());
    assert_numbered_in_order(&records);
    assert_eq!(told(&records), ["kept", "gap 2 block Some([1, 1])"]);
}

#[test]
fn verify_lists_a_shipped_gap_and_the_archive_is_still_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let store = Store::Local(LocalStore::new(bucket.path()));
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(
        fs.clone(),
        &dir.path().join("wal"),
        config(Duration::from_millis(2)),
    )
    .expect("open");
    let layout = Layout {
        prefix: String::new(),
        tenant: "acme".into(),
        writer: "dataplane-0".into(),
    };
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        ShipperConfig::new(layout),
    )
    .expect("shipper");
    fs.faults.lock().expect("lock").space_left = Some(0);
    let kept = append(&log, "kept").expect("queued");
    log.wait_durable(kept).expect_err("the disk is full");
    assert_eq!(refused(&log, 4), 4);
    fs.faults.lock().expect("lock").space_left = None;
    wait_until("the log writes again", || log.failure().is_none());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(shipper.flush(Duration::from_secs(60)))
        .expect("flush");
    let report = rt
        .block_on(verify(&store, "", "acme", &mut |_, _| {}))
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 2);
    assert_eq!(report.gaps.len(), 1, "{:?}", report.gaps);
    let gap = &report.gaps[0];
    assert!(
        gap.starts_with("writer dataplane-0: from ")
            && gap.contains(
                "4 record(s) refused (their events were blocked), records 1..=1 written late"
            )
            && gap.contains("No space left on device")
            && gap.ends_with("(record 2)"),
        "{gap}"
    );
    log.close();
}

#[test]
fn a_sync_that_found_no_descriptor_is_tried_again_and_a_failed_fsync_is_not() {
    let path = Path::new("wal");
    assert!(matches!(
        ArchiveError::sync(path, std::io::Error::from_raw_os_error(24)),
        ArchiveError::Io { .. }
    ));
    assert!(matches!(
        ArchiveError::sync(path, std::io::Error::from_raw_os_error(5)),
        ArchiveError::Sync { .. }
    ));
}
