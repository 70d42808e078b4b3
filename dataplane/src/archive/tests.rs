//! Archive tests on local disk: log recovery, faults, back-pressure, sealing, shipping to a
//! local store, crash points and verification.

use std::path::Path;
use std::time::Duration;

use super::fs::faulty::FaultyFs;
use super::fs::{Filesystem, StdFs};
use super::record::tests::message;
use super::segment::Layout;
use super::store::LocalStore;
use super::verify::verify;
use super::wal::{FRAME_HEADER, Frame, FrameReader, Wal, encode_frame};
use super::*;

fn config() -> LogConfig {
    LogConfig {
        max_unshipped_bytes: 64 << 20,
        max_file_bytes: 4096,
        ..LogConfig::default()
    }
}

/// A message record with `text`, drafted as the dataplane's sessions queue them.
pub(super) fn draft(text: &str) -> Draft {
    let record = message(0, text);
    Draft::new(&record.tenant, &record.writer, &record.conv, &record.body)
}

fn append_all(log: &ArchiveLog, texts: impl IntoIterator<Item = String>) -> u64 {
    let mut last = 0;
    for text in texts {
        last = log.append(|seq| message(seq, &text)).expect("append");
    }
    log.wait_durable(last).expect("durable");
    last
}

/// Appends `count` records one batch each, so that the log rotates predictably.
fn append_each(log: &ArchiveLog, count: usize) {
    for i in 0..count {
        append_all(log, [format!("message number {i}")]);
    }
}

fn read_all(dir: &Path) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    Wal::read_range(&StdFs, dir, 1, u64::MAX, &mut |seq, payload| {
        out.push((seq, serde_json::from_slice(payload).expect("record")));
        true
    })
    .expect("readable");
    out
}

/// A reader of `bytes` as a log file of that length.
fn frames(bytes: &[u8]) -> FrameReader<&[u8]> {
    FrameReader::new(bytes, bytes.len() as u64)
}

#[test]
fn frames_round_trip_and_detect_damage() {
    let mut buffer = Vec::new();
    encode_frame(9, b"hello", &mut buffer);
    assert_eq!(
        frames(&buffer).read_frame().expect("in memory"),
        Some(Frame::Good {
            seq: 9,
            payload: b"hello",
            len: buffer.len()
        })
    );
    assert_eq!(frames(&[]).read_frame().expect("in memory"), None);
    assert_eq!(
        frames(&buffer[..buffer.len() - 1])
            .read_frame()
            .expect("in memory"),
        Some(Frame::Incomplete)
    );
    assert_eq!(
        frames(&buffer[..5]).read_frame().expect("in memory"),
        Some(Frame::Incomplete)
    );
    let mut damaged = buffer.clone();
    damaged[18] ^= 1;
    assert_eq!(
        frames(&damaged).read_frame().expect("in memory"),
        Some(Frame::Bad {
            reason: "checksum mismatch",
            to_end: true
        })
    );
    damaged.extend_from_slice(&buffer);
    assert_eq!(
        frames(&damaged).read_frame().expect("in memory"),
        Some(Frame::Bad {
            reason: "checksum mismatch",
            to_end: false
        }),
        "damage followed by more frames is not a torn tail"
    );
    let mut huge = buffer.clone();
    huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        frames(&huge).read_frame().expect("in memory"),
        Some(Frame::Bad {
            reason: "length field larger than any record",
            to_end: true
        })
    );
}

proptest::proptest! {
    /// Whatever bytes a log file holds, the reader neither panics nor reads past them; and a
    /// log of good frames cut anywhere (a torn write) yields exactly the frames before the cut.
    #[test]
    fn any_bytes_are_read_safely_and_a_cut_log_yields_the_frames_before_the_cut(
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        payloads in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
            1..8,
        ),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
    ) {
        let mut reader = frames(&garbage);
        while let Some(Frame::Good { len, .. }) = reader.read_frame().expect("in memory") {
            proptest::prop_assert!(len >= FRAME_HEADER);
        }
        proptest::prop_assert!(reader.offset() <= garbage.len() as u64);

        let mut log = Vec::new();
        let mut ends = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            encode_frame(i as u64 + 1, payload, &mut log);
            ends.push(log.len());
        }
        let cut = cut.index(log.len() + 1);
        let mut reader = frames(&log[..cut]);
        let mut read = Vec::new();
        while let Some(Frame::Good { seq, payload, .. }) = reader.read_frame().expect("in memory") {
            read.push((seq, payload.to_vec()));
        }
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let expected: Vec<(u64, Vec<u8>)> = payloads[..whole]
            .iter()
            .enumerate()
            .map(|(i, payload)| (i as u64 + 1, payload.clone()))
            .collect();
        proptest::prop_assert_eq!(read, expected);
        let good = if whole == 0 { 0 } else { ends[whole - 1] };
        proptest::prop_assert_eq!(reader.offset(), good as u64);
    }
}

#[test]
fn concurrent_appends_are_durable_in_order_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    assert_eq!(recovery.records, 0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                append_all(&log, (0..250).map(|i| format!("thread {t} message {i}")))
            })
        })
        .collect();
    threads.into_iter().for_each(|t| {
        t.join().expect("thread");
    });
    log.close();
    let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("reopen");
    assert_eq!(
        (
            recovery.records,
            recovery.last_seq,
            recovery.truncated_bytes
        ),
        (1000, 1000, 0)
    );
    let records = read_all(dir.path());
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, (seq, record))| *seq == i as u64 + 1 && record.seq == *seq)
    );
    assert_eq!(
        log.append(|seq| message(seq, "next")).expect("append"),
        1001,
        "numbering continues"
    );
    log.close();
}

#[test]
fn producers_writing_for_themselves_and_the_writer_keep_the_order_through_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    let (mut inline, mut handed_off) = (0, 0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                let mut counts = (0, 0);
                for i in 0..250 {
                    let text = format!("thread {t} message {i}");
                    let seq = log.queue(&draft(&text)).expect("queued");
                    if log.write_now(seq).expect("log works") {
                        counts.0 += 1;
                    } else {
                        rt.block_on(log.written(seq)).expect("the writer writes it");
                        counts.1 += 1;
                    }
                }
                counts
            })
        })
        .collect();
    for thread in threads {
        let (a, b) = thread.join().expect("thread");
        (inline, handed_off) = (inline + a, handed_off + b);
    }
    log.close();
    assert!(inline > 0, "producers wrote for themselves");
    assert!(
        handed_off > 0,
        "records written while the writer thread rotated a file (4 KiB files) went to it"
    );
    let records = read_all(dir.path());
    assert_eq!(records.len(), 1000);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, (seq, record))| *seq == i as u64 + 1 && record.seq == *seq)
    );
    assert!(
        records.windows(2).all(|pair| pair[0].1.ts <= pair[1].1.ts),
        "records drafted on four threads are stamped in sequence order"
    );
    // How often depends on when the writer thread runs (a file grows past its size until
    // the writer rotates it), so only that it did: a busy machine rotates less often.
    assert!(
        StdFs.list(dir.path()).expect("list").len() >= 2,
        "the log rotated"
    );
}

#[test]
fn a_torn_tail_is_cut_and_nothing_durable_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    append_all(&log, (0..30).map(|i| format!("m{i}")));
    log.close();
    let last = StdFs
        .list(dir.path())
        .expect("list")
        .pop()
        .expect("a log file");
    let mut frame = Vec::new();
    encode_frame(31, &message(31, "torn").to_json(), &mut frame);
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&frame[..frame.len() / 2]);
    std::fs::write(&last, &bytes).expect("write");
    let (log, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("recovers");
    assert_eq!(
        (recovery.records, recovery.truncated_bytes),
        (30, (frame.len() / 2) as u64)
    );
    assert_eq!(log.append(|seq| message(seq, "after")).expect("append"), 31);
    log.close();
}

#[test]
fn the_file_being_appended_to_has_its_disk_reserved_and_ends_at_its_last_frame() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let reserved = 1 << 20;
    let (mut wal, _) = Wal::open(StdFs, dir.path(), reserved).expect("open");
    wal.append_batch(&[(1, b"first".to_vec()), (2, b"second".to_vec())])
        .expect("append");
    wal.sync().expect("sync");
    let path = dir.path().join("00000000000000000001.wal");
    let on_disk = |path: &Path| {
        let meta = std::fs::metadata(path).expect("log file");
        (meta.len(), meta.blocks() * 512)
    };
    let (len, allocated) = on_disk(&path);
    assert_eq!(
        len,
        (2 * FRAME_HEADER + 11) as u64,
        "the length is the frames'"
    );
    assert!(
        allocated >= reserved,
        "{allocated} bytes allocated, {reserved} reserved"
    );
    drop(wal);
    let mut frame = Vec::new();
    encode_frame(3, b"torn in the reserved blocks", &mut frame);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    std::io::Write::write_all(&mut file, &frame[..frame.len() / 2]).expect("torn write");
    let (mut wal, recovery) = Wal::open(StdFs, dir.path(), reserved).expect("recovers");
    assert_eq!(
        (recovery.records, recovery.truncated_bytes),
        (2, (frame.len() / 2) as u64)
    );
    assert!(on_disk(&path).1 >= reserved, "reserved again after the cut");
    wal.append_batch(&[(3, b"third".to_vec())]).expect("append");
    let mut seqs = Vec::new();
    Wal::read_range(&StdFs, dir.path(), 1, 3, &mut |seq, _| {
        seqs.push(seq);
        true
    })
    .expect("readable");
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn damage_inside_the_log_is_reported_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    append_each(&log, 200);
    log.close();
    let files = StdFs.list(dir.path()).expect("list");
    assert!(files.len() > 2, "rotation made several files");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let second = match frames(&bytes).read_frame().expect("in memory") {
        Some(Frame::Good { len, .. }) => len,
        other => panic!("{other:?}"),
    };
    bytes[second + 20] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("write");
    let error = ArchiveLog::open(StdFs, dir.path(), config())
        .err()
        .expect("corruption is an error");
    match error {
        ArchiveError::Corrupt {
            path,
            offset,
            reason,
        } => {
            assert_eq!((path, offset), (files[0].clone(), second as u64));
            assert_eq!(reason, "checksum mismatch");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn records_are_read_in_pieces_whatever_their_size_and_damage_is_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(StdFs, dir.path(), 64 << 20).expect("open");
    let sizes = [10, 300 << 10, 0, 1 << 20, 17, 5000];
    let batch: Vec<(u64, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| (i as u64 + 1, vec![i as u8 + b'a'; size]))
        .collect();
    wal.append_batch(&batch).expect("append");
    drop(wal);
    let mut read = Vec::new();
    Wal::read_range(&StdFs, dir.path(), 2, 5, &mut |seq, payload| {
        read.push((seq, payload.to_vec()));
        true
    })
    .expect("readable");
    assert_eq!(read, batch[1..5]);
    let path = dir.path().join("00000000000000000001.wal");
    let mut bytes = std::fs::read(&path).expect("read");
    let fourth = (3 * FRAME_HEADER + 10 + (300 << 10)) as u64;
    bytes[fourth as usize + FRAME_HEADER + 4096] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let mut seen = Vec::new();
    let error = Wal::read_range(&StdFs, dir.path(), 1, 6, &mut |seq, _| {
        seen.push(seq);
        true
    })
    .expect_err("damage is found");
    assert_eq!(seen, [1, 2, 3], "records before the damage are read");
    match error {
        ArchiveError::Corrupt {
            path: at,
            offset,
            reason,
        } => {
            assert_eq!(
                (at, offset, reason.as_str()),
                (path, fourth, "checksum mismatch")
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn a_missing_log_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(StdFs, dir.path(), config()).expect("open");
    append_each(&log, 200);
    log.close();
    let files = StdFs.list(dir.path()).expect("list");
    assert!(files.len() > 3, "one record per batch rotates often");
    std::fs::remove_file(&files[1]).expect("remove");
    let error = ArchiveLog::open(StdFs, dir.path(), config())
        .err()
        .expect("a gap is an error");
    assert!(
        error.to_string().contains("a log file is missing"),
        "{error}"
    );
}

#[test]
fn a_full_disk_refuses_cleanly_and_corrupts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(
        fs.clone(),
        dir.path(),
        LogConfig {
            max_file_bytes: 1 << 20,
            ..config()
        },
    )
    .expect("open");
    append_all(&log, (0..10).map(|i| format!("m{i}")));
    fs.faults.lock().expect("lock").space_left = Some(100);
    let seq = log
        .append(|seq| message(seq, "this record does not fit on the disk"))
        .expect("queued");
    let error = log.wait_durable(seq).expect_err("the write fails");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert!(
        matches!(
            log.append(|seq| message(seq, "more")),
            Err(ArchiveError::Failed(_))
        ),
        "nothing is acknowledged after a failed batch"
    );
    log.close();
    let (_, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("recovers");
    assert_eq!(
        (recovery.records, recovery.truncated_bytes),
        (10, 0),
        "the partial frame was cut at once"
    );
}

#[test]
fn a_producer_writing_for_itself_on_a_full_disk_is_refused_and_corrupts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config()).expect("open");
    append_all(&log, ["the writer thread opens the first file".to_owned()]);
    let second = log.queue(&draft("fits")).expect("queued");
    assert!(log.write_now(second).expect("written by this thread"));
    fs.faults.lock().expect("lock").space_left = Some(10);
    let seq = log
        .queue(&draft("this record does not fit on the disk"))
        .expect("queued");
    let error = log.write_now(seq).expect_err("the write fails");
    assert!(
        error.to_string().contains("No space left on device"),
        "{error}"
    );
    assert!(matches!(
        log.queue(&draft("more")),
        Err(ArchiveError::Failed(_))
    ));
    assert!(
        log.failure()
            .is_some_and(|why| why.contains("No space left on device")),
        "the failure is there for health checks to report"
    );
    log.close();
    let (_, recovery) = ArchiveLog::open(StdFs, dir.path(), config()).expect("recovers");
    assert_eq!((recovery.records, recovery.truncated_bytes), (2, 0));
}

#[test]
fn a_failing_fsync_is_never_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config()).expect("open");
    fs.faults.lock().expect("lock").fail_sync = true;
    let seq = log.append(|seq| message(seq, "x")).expect("queued");
    assert!(log.wait_durable(seq).is_err());
    assert_eq!(log.durable_seq(), 0);
    log.close();
}

#[test]
fn written_is_reported_before_the_fsync_and_a_failed_fsync_stops_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = FaultyFs::default();
    let (log, _) = ArchiveLog::open(fs.clone(), dir.path(), config()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let first = log.append(|seq| message(seq, "synced")).expect("queued");
    rt.block_on(log.synced(first)).expect("synced");
    fs.faults.lock().expect("lock").fail_sync = true;
    let second = log
        .append(|seq| message(seq, "written only"))
        .expect("queued");
    rt.block_on(log.written(second))
        .expect("in the file, though its fsync fails");
    assert!(matches!(
        rt.block_on(log.synced(second)),
        Err(ArchiveError::Failed(_))
    ));
    assert_eq!(log.durable_seq(), first);
    assert!(
        matches!(
            log.append(|seq| message(seq, "after")),
            Err(ArchiveError::Failed(_))
        ),
        "nothing is accepted after a failed fsync"
    );
    log.close();
    let (_, recovery) = Wal::open(StdFs, dir.path(), 1 << 20).expect("reopen");
    assert_eq!(recovery.records, 2, "the written record is in the file");
}

#[test]
fn unawaited_records_wait_for_the_sync_interval_and_a_waiter_syncs_at_once() {
    let open = |interval: Duration| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            sync_interval: interval,
            ..config()
        };
        let (log, _) = ArchiveLog::open(StdFs, dir.path(), config).expect("open");
        (dir, log)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let (_dir, log) = open(Duration::from_secs(3600));
    let written = log.append(|seq| message(seq, "written")).expect("queued");
    rt.block_on(log.written(written)).expect("written");
    assert_eq!(
        log.durable_seq(),
        0,
        "no fsync before the interval when no one waits"
    );
    let awaited = log.append(|seq| message(seq, "awaited")).expect("queued");
    rt.block_on(log.synced(awaited))
        .expect("a waiter gets its fsync without waiting for the interval");
    assert_eq!(log.durable_seq(), awaited);
    log.close();

    let (_dir, log) = open(Duration::from_millis(20));
    let seq = log.append(|seq| message(seq, "unawaited")).expect("queued");
    rt.block_on(log.written(seq)).expect("written");
    while log.durable_seq() < seq {
        std::thread::sleep(Duration::from_millis(5));
    }
    log.close();
}
#[test]
fn records_in_rotated_files_are_durable_and_async_waits_see_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(
        StdFs,
        dir.path(),
        LogConfig {
            max_unshipped_bytes: 1 << 30,
            max_file_bytes: 600,
            ..LogConfig::default()
        },
    )
    .expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut last = 0;
    for i in 0..50 {
        last = log
            .append(|seq| message(seq, &format!("message {i}")))
            .expect("queued");
        rt.block_on(log.written(last)).expect("written");
    }
    rt.block_on(log.synced(last)).expect("synced");
    assert_eq!(log.durable_seq(), last);
    log.close();
    let files = StdFs.list(dir.path()).expect("list").len();
    assert!(files > 5, "the log rotated ({files} files)");
    assert_eq!(read_all(dir.path()).len(), 50);
}

#[test]
fn back_pressure_when_unshipped_data_reaches_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = ArchiveLog::open(
        StdFs,
        dir.path(),
        LogConfig {
            max_unshipped_bytes: 2000,
            max_file_bytes: 1 << 20,
            ..LogConfig::default()
        },
    )
    .expect("open");
    let mut accepted = 0;
    let error = loop {
        match log.append(|seq| message(seq, "a message of ordinary length")) {
            Ok(seq) => {
                accepted += 1;
                log.wait_durable(seq).expect("durable");
            }
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, ArchiveError::Full { limit: 2000, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("not yet shipped"), "{error}");
    assert!((5..20).contains(&accepted), "{accepted}");
    log.close();
}

fn layout() -> Layout {
    Layout {
        prefix: String::new(),
        tenant: "acme".into(),
        writer: "dp-0".into(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_flush_ships_records_written_but_not_yet_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let fs = FaultyFs::default();
    fs.faults.lock().expect("lock").sync_delay = Some(Duration::from_millis(300));
    let (log, _) = ArchiveLog::open(fs.clone(), &dir.path().join("wal"), config()).expect("open");
    let mut shipper = Shipper::open(
        fs,
        dir.path(),
        log.clone(),
        Store::Local(LocalStore::new(bucket.path())),
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    let last = log
        .append(|seq| message(seq, "just before shutdown"))
        .expect("queued");
    runtime()
        .block_on(shipper.flush(Duration::from_secs(5)))
        .expect("flush");
    assert_eq!(
        shipper.state().shipped_through,
        last,
        "a flush covers everything appended before it"
    );
    log.close();
}

#[test]
fn shipped_segments_verify_and_damage_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let store = Store::Local(LocalStore::new(bucket.path()));
    let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("open");
    let mut shipper_config = ShipperConfig::new(layout());
    shipper_config.max_segment_bytes = 3000;
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        shipper_config,
    )
    .expect("shipper");
    let rt = runtime();
    for batch in 0..5 {
        append_all(&log, (0..40).map(|i| format!("batch {batch} message {i}")));
        rt.block_on(shipper.flush(Duration::from_secs(5)))
            .expect("flush");
    }
    assert_eq!(shipper.state().shipped_through, 200);
    let report = rt
        .block_on(verify(&store, "", "acme", &mut |_, _| {}))
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!((report.writers, report.records), (1, 200));
    assert!(report.segments >= 5);
    assert!(
        StdFs
            .list(&dir.path().join("outbox"))
            .expect("outbox")
            .is_empty(),
        "outbox emptied after shipping"
    );

    let segments: Vec<String> = rt.block_on(store.list("tenant=acme/date=")).expect("list");
    let altered = bucket.path().join(&segments[1]);
    let mut bytes = std::fs::read(&altered).expect("read");
    bytes[10] ^= 1;
    std::fs::write(&altered, bytes).expect("write");
    std::fs::remove_file(bucket.path().join(&segments[3])).expect("remove");
    let report = rt
        .block_on(verify(&store, "", "acme", &mut |_, _| {}))
        .expect("verify");
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!("{}: altered", segments[1])),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("{}: segment missing", segments[3])),
        "{problems}"
    );
    log.close();
}

#[test]
fn a_crash_between_sealing_and_shipping_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let store = Store::Local(LocalStore::new(bucket.path()));
    let rt = runtime();
    {
        let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("open");
        let mut shipper = Shipper::open(
            StdFs,
            dir.path(),
            log.clone(),
            store.clone(),
            ShipperConfig::new(layout()),
        )
        .expect("shipper");
        append_all(&log, (0..50).map(|i| format!("m{i}")));
        shipper.seal_due(true).expect("sealed");
        log.close();
    }
    let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("reopen");
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    assert_eq!(
        (
            shipper.state().sealed_through,
            shipper.state().shipped_through
        ),
        (50, 0)
    );
    append_all(&log, (0..10).map(|i| format!("after restart {i}")));
    rt.block_on(shipper.flush(Duration::from_secs(5)))
        .expect("flush");
    let report = rt
        .block_on(verify(&store, "", "acme", &mut |_, _| {}))
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!((report.records, report.segments), (60, 2));
    log.close();
}

#[test]
fn an_unreachable_store_delays_shipping_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let blocked = bucket.path().join("store");
    std::fs::write(&blocked, b"a file where the store's folder should be").expect("block");
    let store = Store::Local(LocalStore::new(&blocked));
    let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("open");
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    let rt = runtime();
    append_all(&log, (0..20).map(|i| format!("m{i}")));
    let error = rt
        .block_on(shipper.flush(Duration::from_millis(300)))
        .expect_err("store down");
    assert!(
        matches!(error, ArchiveError::Io { .. } | ArchiveError::Store { .. }),
        "{error}"
    );
    let health = shipper.health();
    assert!(
        matches!(health.get(), crate::archive::ShipHealth::Failing { .. }),
        "the failure is reported: {:?}",
        health.get()
    );
    append_all(&log, (0..20).map(|i| format!("while down {i}")));
    shipper
        .seal_due(true)
        .expect("sealing continues while the store is down");
    std::fs::remove_file(&blocked).expect("store back");
    rt.block_on(shipper.flush(Duration::from_secs(5)))
        .expect("ships");
    assert!(
        matches!(health.get(), crate::archive::ShipHealth::Shipped { .. }),
        "the recovery is reported: {:?}",
        health.get()
    );
    let report = rt
        .block_on(verify(&store, "", "acme", &mut |_, _| {}))
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        report.records, 42,
        "the 40 messages, and the system records that mark when shipping began to fail and \
         when it worked again (a flush ships what its own rounds recorded)"
    );
    let all = rt
        .block_on(crate::archive::read::search(
            &store,
            "",
            "acme",
            &crate::archive::read::Query::default(),
            &mut |_, _| {},
        ))
        .expect("read");
    let events: Vec<String> = all
        .into_iter()
        .filter_map(|record| match record.body {
            Body::System { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        ["archive-shipping-failing", "archive-shipping-resumed"],
        "the gap's start and end are in the log"
    );
    log.close();
}

#[test]
fn an_idle_shipper_probes_its_store_and_reports_what_it_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let blocked = bucket.path().join("store");
    std::fs::write(&blocked, b"a file where the store's folder should be").expect("block");
    let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("open");
    let rt = runtime();
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        Store::Local(LocalStore::new(&blocked)),
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    let health = shipper.health();
    rt.block_on(shipper.probe())
        .expect_err("the store is blocked");
    assert!(
        matches!(health.get(), ShipHealth::Failing { .. }),
        "{:?}",
        health.get()
    );
    drop(shipper);

    let store = Store::Local(LocalStore::new(bucket.path().join("archive")));
    let shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store,
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    let health = shipper.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(shipper.run(
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let found = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let ShipHealth::Reachable { .. } = health.get() {
                    return health.get();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    });
    assert!(
        found.is_ok(),
        "with no records, a running shipper probes the store: {:?}",
        health.get()
    );
    let _ = stop.send(());
    rt.block_on(running).expect("joined").expect("stopped");
    log.close();
}

#[test]
fn leftovers_of_a_crash_are_cleaned_and_a_lost_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = tempfile::tempdir().expect("bucket");
    let store = Store::Local(LocalStore::new(bucket.path()));
    let rt = runtime();
    let (log, _) = ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("open");
    let mut shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        ShipperConfig::new(layout()),
    )
    .expect("shipper");
    append_all(&log, (0..10).map(|i| format!("m{i}")));
    rt.block_on(shipper.flush(Duration::from_secs(5)))
        .expect("flush");
    let outbox = dir.path().join("outbox");
    std::fs::write(
        outbox.join("00000000000000000001.jsonl.zst"),
        b"shipped before a crash",
    )
    .expect("leftover");
    std::fs::write(
        outbox.join("00000000000000000011.jsonl.zst"),
        b"sealed, never recorded",
    )
    .expect("leftover");
    drop(shipper);
    let _shipper = Shipper::open(
        StdFs,
        dir.path(),
        log.clone(),
        store.clone(),
        ShipperConfig::new(layout()),
    )
    .expect("reopen");
    assert!(
        StdFs.list(&outbox).expect("outbox").is_empty(),
        "stale outbox files removed"
    );
    log.close();

    std::fs::remove_dir_all(dir.path().join("wal")).expect("lose the log");
    let (fresh, _) =
        ArchiveLog::open(StdFs, &dir.path().join("wal"), config()).expect("a new, empty log");
    let error = Shipper::open(
        StdFs,
        dir.path(),
        fresh.clone(),
        store,
        ShipperConfig::new(layout()),
    )
    .err()
    .expect("refused");
    assert!(
        error.to_string().contains("the log was lost or replaced"),
        "{error}"
    );
    fresh.close();
}
