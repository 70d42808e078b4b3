//! The archive's costs, each beside a reference, on chat-like traffic (the corpus of
//! `common`): records per second through the log with group commit (and per CPU-second),
//! bytes per archived message, and the lag from a message to its copy in the store with the
//! default shipper settings.
//! Run: `cargo bench -p imgate-dataplane --bench archive` (about 90 s; the lag run takes 65 s).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{corpus, keywords};
use imgate_crds::policy::{Direction, Protocol};
use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::record::{Kind, Participant, RecordedVerdict};
use imgate_dataplane::archive::segment::{GENESIS, Layout, SegmentInput, seal};
use imgate_dataplane::archive::store::LocalStore;
use imgate_dataplane::archive::wal::encode_frame;
use imgate_dataplane::archive::{
    ArchiveLog, Body, Draft, LogConfig, Record, Shipper, ShipperConfig, Store,
};

/// Chat-like message records: a few hundred people, each talking to a handful of clients.
fn records() -> Vec<Record> {
    let events = corpus(&keywords(1_000, 1));
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let user = i % 300;
            Record {
                v: 1,
                tenant: "meridian-capital".into(),
                writer: "dataplane-0".into(),
                seq: 0,
                ts: DateTime::<Utc>::from_timestamp_millis(1_764_000_000_000 + i as i64 * 350)
                    .unwrap_or_default(),
                conv: format!(
                    "xmpp:user{user}@chat.meridian.example/client{}@chat.example",
                    i % 7
                ),
                body: Body::Message {
                    session: format!("s-{}", user * 3 + i % 3),
                    dir: if i % 3 == 0 {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    protocol: Protocol::Xmpp,
                    from: Participant {
                        handle: format!("user{user}@chat.meridian.example"),
                        person: Some(format!("person.{user}@meridian.example")),
                    },
                    to: vec![format!("client{}@chat.example", i % 7)],
                    room: None,
                    kind: Kind::Direct,
                    text: event.text().unwrap_or_default().to_owned(),
                    text_base64: None,
                    delivered: None,
                    verdict: RecordedVerdict::default(),
                    msgid: None,
                },
            }
        })
        .collect()
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("archive-bench-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// `producers` threads queue `per_producer` records each, drafted as the dataplane's sessions
/// draft them; each writes what is queued and waits for durability every `wait_every` records
/// (1 = a fail-closed session waiting for each of its messages).
fn through_log(
    records: &Arc<Vec<Record>>,
    producers: usize,
    per_producer: usize,
    wait_every: usize,
) -> (f64, f64) {
    let dir = fresh_dir("log");
    let (log, _) = ArchiveLog::open(
        StdFs,
        &dir,
        LogConfig {
            max_unshipped_bytes: 8 << 30,
            ..LogConfig::default()
        },
    )
    .expect("log");
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let (log, records) = (log.clone(), records.clone());
            std::thread::spawn(move || {
                for i in 0..per_producer {
                    let r = &records[(p * per_producer + i) % records.len()];
                    let draft = Draft::new(&r.tenant, &r.writer, &r.conv, &r.body);
                    let seq = log.queue(&draft).expect("queue");
                    if (i + 1) % wait_every == 0 || i + 1 == per_producer {
                        log.write_now(seq).expect("write");
                        log.wait_durable(seq).expect("durable");
                    }
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .for_each(|t| t.join().expect("producer"));
    let total = (producers * per_producer) as f64;
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    log.close();
    (total / wall, total / cpu.max(1e-9))
}

/// The reference: the same frames written to one file in batches of 4,096 with one fsync each.
fn raw_file(records: &[Record], total: usize) -> (f64, f64) {
    let path = fresh_dir("raw").join("raw.log");
    let mut file = std::fs::File::create(&path).expect("file");
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let mut buffer = Vec::new();
    for i in 0..total {
        let record = Record {
            seq: i as u64 + 1,
            ..records[i % records.len()].clone()
        };
        encode_frame(record.seq, &record.to_json(), &mut buffer);
        if buffer.len() > 1 << 20 || i + 1 == total {
            file.write_all(&buffer).expect("write");
            file.sync_data().expect("fsync");
            buffer.clear();
        }
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    (total as f64 / wall, total as f64 / cpu.max(1e-9))
}

fn bytes_per_message(records: &[Record]) -> (f64, f64) {
    let numbered: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            seq: i as u64 + 1,
            ..r.clone()
        })
        .collect();
    let input = SegmentInput::from_records(&numbered);
    let layout = Layout {
        prefix: String::new(),
        tenant: "meridian-capital".into(),
        writer: "dataplane-0".into(),
    };
    let lines = input.line_bytes;
    let sealed = seal(&layout, 1, GENESIS, input);
    let manifest = serde_json::to_vec_pretty(&sealed.manifest)
        .expect("manifest")
        .len();
    (
        (sealed.body.len() + manifest) as f64 / records.len() as f64,
        lines as f64 / records.len() as f64,
    )
}

/// Lag from append to the store's acknowledgement, with the default shipper settings, at
/// `rate` records per second for `seconds`.
fn lag(records: &[Record], rate: u64, seconds: u64) -> (Duration, Duration, Duration) {
    let dir = fresh_dir("lag");
    let (log, _) = ArchiveLog::open(StdFs, &dir.join("wal"), LogConfig::default()).expect("log");
    let store = Store::Local(LocalStore::new(dir.join("bucket")));
    let layout = Layout {
        prefix: String::new(),
        tenant: "meridian-capital".into(),
        writer: "dataplane-0".into(),
    };
    let mut shipper = Shipper::open(StdFs, &dir, log.clone(), store, ShipperConfig::new(layout))
        .expect("shipper");
    let appended = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let producer = {
        let (log, appended, records) = (log.clone(), appended.clone(), records.to_vec());
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..rate * seconds {
                let due = start + Duration::from_micros(i * 1_000_000 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let seq = log
                    .append(|seq| Record {
                        seq,
                        ..records[i as usize % records.len()].clone()
                    })
                    .expect("append");
                appended.lock().expect("lock").push(Instant::now());
                log.wait_durable(seq).expect("durable");
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut lags = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds + 25);
    while Instant::now() < end && lags.len() < (rate * seconds) as usize {
        shipper.seal_due(false).expect("seal");
        runtime.block_on(shipper.ship_sealed()).expect("ship");
        let shipped = shipper.state().shipped_through as usize;
        let now = Instant::now();
        let times = appended.lock().expect("lock");
        lags.extend(
            times[lags.len()..shipped.min(times.len())]
                .iter()
                .map(|t| now - *t),
        );
        drop(times);
        std::thread::sleep(Duration::from_millis(500));
    }
    producer.join().expect("producer");
    log.close();
    lags.sort();
    let at = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)];
    (at(0.5), at(0.99), *lags.last().unwrap_or(&Duration::ZERO))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("archive: bench");
        return;
    }
    let records = Arc::new(records());
    println!("archive log throughput (records/s wall, records per CPU-second), 200,000 records:");
    let (wall, cpu) = through_log(&records, 1, 200_000, 10_000);
    println!(
        "  imgate log, 1 producer, waits every 10,000:     {wall:>10.0} /s   {cpu:>10.0} /CPU-s"
    );
    let (wall_many, cpu_many) = through_log(&records, 64, 3_125, 1);
    println!(
        "  imgate log, 64 sessions each waiting per record: {wall_many:>8.0} /s   {cpu_many:>10.0} /CPU-s"
    );
    let (raw_wall, raw_cpu) = raw_file(&records, 200_000);
    println!(
        "  reference: same frames, one file, fsync per MiB: {raw_wall:>8.0} /s   {raw_cpu:>10.0} /CPU-s"
    );
    println!(
        "  ratio imgate/reference (1 producer, per CPU-s): {:.2}",
        cpu / raw_cpu
    );
    let (stored, json) = bytes_per_message(&records);
    println!(
        "bytes per archived message (10,000 chat messages): {stored:.1} stored (segment + manifest), {json:.1} as JSON ({:.1}x smaller)",
        json / stored
    );
    let (p50, p99, max) = lag(&records, 200, 65);
    println!(
        "lag to the store at 200 records/s, default settings: p50 {:.1} s, p99 {:.1} s, max {:.1} s",
        p50.as_secs_f64(),
        p99.as_secs_f64(),
        max.as_secs_f64()
    );
}
