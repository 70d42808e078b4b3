//! The archive against a real S3 API server (moto, which enforces Object Lock): retention and
//! encryption land on every object, locked versions cannot be deleted, verify passes on an
//! intact archive and fails on an altered or incomplete one, an outage delays shipping without
//! losing or reordering anything, a probe of an idle store finds a bucket without Object Lock,
//! a missing bucket and an outage, and DuckDB reads the segments straight from the bucket.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imgate_crds::policy::{Direction, Protocol};
use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::record::{Kind, Participant, RecordedVerdict};
use imgate_dataplane::archive::segment::Layout;
use imgate_dataplane::archive::store::{Encryption, S3Config, S3Store};
use imgate_dataplane::archive::verify::verify;
use imgate_dataplane::archive::{
    ArchiveLog, Body, LogConfig, Record, ShipHealth, Shipper, ShipperConfig, Store,
};
use support::{Moto, Relay};

const PEOPLE: [&str; 3] = ["ana@acme.example", "bo@acme.example", "cy@acme.example"];

async fn s3(endpoint: &str, bucket: &str) -> S3Store {
    S3Store::connect(&S3Config {
        bucket: bucket.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.into()),
        credentials: Some(("test".into(), "test".into())),
        timeout: None,
    })
    .await
}

async fn create_bucket(store: &S3Store, locked: bool) {
    store
        .client()
        .create_bucket()
        .bucket(store.bucket())
        .object_lock_enabled_for_bucket(locked)
        .send()
        .await
        .expect("bucket created");
}

fn record(seq: u64, person: &str, text: String) -> Record {
    Record {
        v: 1,
        tenant: "acme".into(),
        writer: "dp-0".into(),
        seq,
        ts: DateTime::<Utc>::from_timestamp_millis(1_764_000_000_000 + seq as i64 * 1000)
            .unwrap_or_default(),
        conv: format!("conv-{person}"),
        body: Body::Message {
            session: "s".into(),
            dir: Direction::Outbound,
            protocol: Protocol::Xmpp,
            from: Participant {
                handle: person.replace("@acme.example", "@chat.example"),
                person: Some(person.into()),
            },
            to: vec!["client@chat.example".into()],
            room: None,
            kind: Kind::Direct,
            text,
            text_base64: None,
            delivered: None,
            verdict: RecordedVerdict::default(),
            msgid: None,
        },
    }
}

/// Appends `count` messages round-robin over PEOPLE and waits until they are durable.
fn write_messages(log: &ArchiveLog, count: usize) {
    let mut last = 0;
    for i in 0..count {
        let person = PEOPLE[i % PEOPLE.len()];
        last = log
            .append(|seq| {
                record(
                    seq,
                    person,
                    format!("message {i} about the quarterly numbers"),
                )
            })
            .expect("append");
    }
    log.wait_durable(last).expect("durable");
}

fn shipper(
    dir: &Path,
    log: &ArchiveLog,
    store: Store,
    retention: Option<(u32, bool)>,
) -> Shipper<StdFs> {
    let mut config = ShipperConfig::new(Layout {
        prefix: String::new(),
        tenant: "acme".into(),
        writer: "dp-0".into(),
    });
    config.max_segment_bytes = 8 << 10;
    config.retention = retention;
    config.encryption = Some(Encryption::S3);
    Shipper::open(StdFs, dir, log.clone(), store, config).expect("shipper")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worm_archive_in_s3() {
    let moto = Moto::start();
    let store = s3(&moto.endpoint(), "locked").await;
    create_bucket(&store, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) =
        ArchiveLog::open(StdFs, &dir.path().join("wal"), LogConfig::default()).expect("log");
    let mut shipper = shipper(dir.path(), &log, Store::S3(store.clone()), Some((1, true)));
    write_messages(&log, 300);
    shipper
        .flush(Duration::from_secs(30))
        .await
        .expect("shipped");

    let keys = Store::S3(store.clone())
        .list("tenant=acme/")
        .await
        .expect("list");
    let segments: Vec<&String> = keys.iter().filter(|k| k.ends_with(".jsonl.zst")).collect();
    assert!(segments.len() >= 2, "{keys:?}");
    for key in &keys {
        let head = store
            .client()
            .head_object()
            .bucket("locked")
            .key(key.as_str())
            .send()
            .await
            .expect("head");
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{key}"
        );
        let until = head
            .object_lock_retain_until_date()
            .expect("retain-until")
            .secs();
        assert!(
            until > Utc::now().timestamp() + 23 * 3600,
            "{key}: retained about a day"
        );
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256"),
            "{key}"
        );
        let version = head.version_id().expect("versioned").to_owned();
        let deleted = store
            .client()
            .delete_object()
            .bucket("locked")
            .key(key.as_str())
            .version_id(version)
            .send()
            .await;
        let error = deleted.expect_err("a locked version cannot be deleted");
        assert!(
            format!("{:?}", error).contains("AccessDenied"),
            "{key}: {error:?}"
        );
    }

    let report = verify(&Store::S3(store.clone()), "", "acme", &mut |_, _| {})
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 300);

    let output = std::process::Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/duckdb_count.py"),
            &moto.endpoint(),
            "locked",
            "acme",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counts: BTreeMap<String, u64> =
        serde_json::from_slice(&output.stdout).expect("JSON counts");
    let expected: BTreeMap<String, u64> = PEOPLE.iter().map(|p| (p.to_string(), 100)).collect();
    assert_eq!(counts, expected);
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_altered_and_removed_segments() {
    let moto = Moto::start();
    let store = s3(&moto.endpoint(), "plain").await;
    create_bucket(&store, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) =
        ArchiveLog::open(StdFs, &dir.path().join("wal"), LogConfig::default()).expect("log");
    let mut shipper = shipper(dir.path(), &log, Store::S3(store.clone()), None);
    write_messages(&log, 400);
    shipper
        .flush(Duration::from_secs(30))
        .await
        .expect("shipped");
    let any = Store::S3(store.clone());
    assert!(
        verify(&any, "", "acme", &mut |_, _| {})
            .await
            .expect("verify")
            .is_intact()
    );

    let segments: Vec<String> = any.list("tenant=acme/date=").await.expect("list");
    assert!(segments.len() >= 3, "{segments:?}");
    let mut altered = any.get(&segments[0]).await.expect("get");
    altered[20] ^= 0x55;
    store
        .client()
        .put_object()
        .bucket("plain")
        .key(&segments[0])
        .body(altered.into())
        .send()
        .await
        .expect("overwrite");
    store
        .client()
        .delete_object()
        .bucket("plain")
        .key(&segments[2])
        .send()
        .await
        .expect("delete");
    let report = verify(&any, "", "acme", &mut |_, _| {})
        .await
        .expect("verify");
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!("{}: altered", segments[0])),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("{}: segment missing", segments[2])),
        "{problems}"
    );
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_finds_an_unlocked_bucket_a_missing_one_and_an_outage() {
    let moto = Moto::start();
    let relay = Relay::start(moto.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) =
        ArchiveLog::open(StdFs, &dir.path().join("wal"), LogConfig::default()).expect("log");
    let probed = |bucket: &str, retention| {
        let (dir, log, endpoint) = (dir.path().to_owned(), log.clone(), relay.endpoint());
        let bucket = bucket.to_owned();
        async move {
            let store = s3(&endpoint, &bucket).await;
            let mut shipper = shipper(&dir, &log, Store::S3(store), retention);
            let result = shipper.probe().await.map_err(|e| e.to_string());
            (result, shipper.health().get())
        }
    };
    let locked = s3(&moto.endpoint(), "locked").await;
    create_bucket(&locked, true).await;
    let plain = s3(&moto.endpoint(), "plain").await;
    create_bucket(&plain, false).await;

    let (result, health) = probed("locked", Some((1, true))).await;
    assert_eq!(result, Ok(()));
    assert!(matches!(health, ShipHealth::Reachable { .. }), "{health:?}");
    let (result, _) = probed("plain", None).await;
    assert_eq!(result, Ok(()), "no retention asked, no lock needed");
    let (result, health) = probed("plain", Some((1, true))).await;
    let error = result.expect_err("retention needs Object Lock");
    assert!(
        error.contains("bucket plain: Object Lock is not enabled"),
        "{error}"
    );
    assert!(matches!(health, ShipHealth::Failing { .. }), "{health:?}");
    let (result, _) = probed("missing", None).await;
    assert!(
        result
            .expect_err("no such bucket")
            .contains("bucket missing")
    );
    relay.set_up(false);
    let (result, health) = probed("locked", Some((1, true))).await;
    assert!(result.is_err(), "the store is down");
    assert!(matches!(health, ShipHealth::Failing { .. }), "{health:?}");
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_shipping_and_loses_nothing() {
    let moto = Moto::start();
    let relay = Relay::start(moto.port).await;
    let store = s3(&relay.endpoint(), "outage").await;
    create_bucket(&store, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) =
        ArchiveLog::open(StdFs, &dir.path().join("wal"), LogConfig::default()).expect("log");
    let mut shipper = shipper(dir.path(), &log, Store::S3(store.clone()), Some((1, false)));
    write_messages(&log, 100);
    shipper
        .flush(Duration::from_secs(30))
        .await
        .expect("shipped before the outage");

    relay.set_up(false);
    write_messages(&log, 200);
    let error = shipper
        .flush(Duration::from_secs(2))
        .await
        .expect_err("store unreachable");
    assert!(error.to_string().contains("object store"), "{error}");
    assert!(log.unshipped_bytes() > 0, "records wait in the log");
    relay.set_up(true);
    write_messages(&log, 100);
    shipper
        .flush(Duration::from_secs(60))
        .await
        .expect("shipped after the outage");

    let report = verify(&Store::S3(store.clone()), "", "acme", &mut |_, _| {})
        .await
        .expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        report.records, 402,
        "everything shipped, once, with the records that mark when shipping began to fail and \
         when it worked again"
    );
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_segments_go_up_in_parts_with_lock_and_kms() {
    use imgate_dataplane::archive::store::{PutOptions, Retention};
    let moto = Moto::start();
    let store = s3(&moto.endpoint(), "large").await;
    create_bucket(&store, true).await;
    let body: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/1f9c2d3e-0000-4000-8000-000000000001";
    let options = PutOptions {
        retention: Some(Retention {
            compliance: false,
            until: Utc::now() + chrono::Duration::days(2),
        }),
        encryption: Some(Encryption::Kms(key_id.into())),
    };
    let any = Store::S3(store.clone());
    any.put("tenant=acme/big.jsonl.zst", body.clone(), &options)
        .await
        .expect("multipart put");
    let head = store
        .client()
        .head_object()
        .bucket("large")
        .key("tenant=acme/big.jsonl.zst")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("GOVERNANCE")
    );
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("aws:kms")
    );
    assert_eq!(head.ssekms_key_id(), Some(key_id));
    assert!(
        head.e_tag().is_some_and(|tag| tag.contains('-')),
        "a multipart ETag: {:?}",
        head.e_tag()
    );
    assert_eq!(
        any.get("tenant=acme/big.jsonl.zst").await.expect("get"),
        body
    );
}
