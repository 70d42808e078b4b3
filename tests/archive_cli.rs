//! `imgate archive` as a compliance officer runs it, on a local archive and on a bucket in a
//! real S3 API server (moto).

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::imgate_output as imgate;
use imgate_crds::policy::{Direction, Protocol, Severity};
use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::record::{Kind, Participant, RecordedVerdict};
use imgate_dataplane::archive::segment::Layout;
use imgate_dataplane::archive::store::{LocalStore, S3Config, S3Store};
use imgate_dataplane::archive::{
    ArchiveLog, Body, LogConfig, Record, Shipper, ShipperConfig, Store,
};
use imgate_dataplane::inspect::policy::Action;

/// `imgate archive --tenant acme --dir DIR ARGS...`
fn archive(dir: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["archive", "--tenant", "acme", "--dir", dir];
    all.extend_from_slice(args);
    imgate(&all, &[])
}

fn message(
    seq: u64,
    conv: &str,
    minute: i64,
    from: (&str, &str),
    text: &str,
    verdict: RecordedVerdict,
    delivered: Option<&str>,
) -> Record {
    Record {
        v: 1,
        tenant: "acme".into(),
        writer: "dp-0".into(),
        seq,
        ts: DateTime::<Utc>::from_timestamp(1_764_000_000 + minute * 60, 0).unwrap_or_default(),
        conv: conv.into(),
        body: Body::Message {
            session: "s1".into(),
            dir: Direction::Outbound,
            protocol: Protocol::Xmpp,
            from: Participant {
                handle: from.0.into(),
                person: Some(from.1.into()),
            },
            to: vec!["client@chat.example".into()],
            room: None,
            kind: Kind::Direct,
            text: text.into(),
            text_base64: None,
            delivered: delivered.map(Into::into),
            verdict,
            msgid: None,
        },
    }
}

const JANE: (&str, &str) = ("surferdood124@chat.example", "jane.doe@acme.example");
const SAM: (&str, &str) = ("sam@chat.example", "sam.lee@acme.example");

/// Ships a small archive: two conversations, one with a redacted card number.
async fn build_archive(store: Store, dir: &Path) {
    let (log, _) = ArchiveLog::open(StdFs, &dir.join("wal"), LogConfig::default()).expect("log");
    let layout = Layout {
        prefix: String::new(),
        tenant: "acme".into(),
        writer: "dp-0".into(),
    };
    let mut shipper =
        Shipper::open(StdFs, dir, log.clone(), store, ShipperConfig::new(layout)).expect("shipper");
    let redacted = RecordedVerdict {
        action: Action::Redact,
        monitor: Action::Allow,
        rules: vec!["firm-wide/card-numbers".into()],
        severities: vec![Severity::High],
    };
    let script: Vec<Box<dyn Fn(u64) -> Record + Send>> = vec![
        Box::new(|seq| {
            message(
                seq,
                "conv-jane",
                0,
                JANE,
                "morning, are we on for 10?",
                RecordedVerdict::default(),
                None,
            )
        }),
        Box::new(|seq| {
            message(
                seq,
                "conv-sam",
                1,
                SAM,
                "the deck is attached",
                RecordedVerdict::default(),
                None,
            )
        }),
        Box::new(move |seq| {
            message(
                seq,
                "conv-jane",
                2,
                JANE,
                "card 4111 1111 1111 1111",
                redacted.clone(),
                Some("card ███████████████████"),
            )
        }),
        Box::new(|seq| {
            message(
                seq,
                "conv-jane",
                3,
                JANE,
                "thanks, talk soon",
                RecordedVerdict::default(),
                None,
            )
        }),
    ];
    for make in script {
        let last = log.append(make).expect("append");
        log.wait_durable(last).expect("durable");
        shipper
            .flush(Duration::from_secs(10))
            .await
            .expect("shipped");
    }
    log.close();
}

fn local_archive() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let bucket = root.path().join("bucket");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(build_archive(
        Store::Local(LocalStore::new(&bucket)),
        &root.path().join("dataplane"),
    ));
    (root, bucket)
}

#[test]
fn list_verify_search_and_show_a_local_archive() {
    let (_root, bucket) = local_archive();
    let dir = bucket.to_str().expect("utf-8");
    let (code, out) = archive(dir, &["ls"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4 segment(s), 4 record(s) in local directory")
            && out.contains("(not WORM storage)"),
        "{out}"
    );

    let (code, out) = archive(dir, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact: 1 writer(s), 4 segment(s), 4 record(s)"),
        "{out}"
    );

    let (code, out) = archive(dir, &["search", "--rule", "firm-wide"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("conv-jane  [2025-11-24 16:02:00Z] jane.doe@acme.example (surferdood124@chat.example) -> client@chat.example: card 4111 1111 1111 1111  [redact: firm-wide/card-numbers]  [delivered as: card ███████████████████]"), "{out}");
    assert!(out.contains("1 record(s) found"), "{out}");

    let (_, out) = archive(
        dir,
        &["search", "--person", "SAM.LEE@acme.example", "--json"],
    );
    let record: Record =
        serde_json::from_str(out.lines().next().expect("a line")).expect("a JSON record");
    assert_eq!(record.conv, "conv-sam");

    let (_, out) = archive(
        dir,
        &[
            "search",
            "--text",
            "TALK SOON",
            "--from",
            "2025-11-24T16:03:00Z",
        ],
    );
    assert!(
        out.contains("1 record(s) found") && out.contains("thanks, talk soon"),
        "{out}"
    );

    let (code, out) = archive(dir, &["show", "conv-jane"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Conversation conv-jane (3 records)");
    assert!(
        lines[1].contains("morning") && lines[2].contains("card") && lines[3].contains("talk soon"),
        "{out}"
    );

    let (code, out) = archive(dir, &["show", "conv-nobody"]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    let (_root, bucket) = local_archive();
    for args in [
        &["search"][..],
        &["search", "--json"],
        &["ls"],
        &["show", "conv-jane"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args(["archive", "--tenant", "acme", "--dir"])
            .arg(&bucket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("imgate archive runs");
        // `| head -0`: the reader is gone before the first line is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("it ends");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(141), "{args:?}: {said}");
        assert!(
            !said.contains("panicked") && !said.contains("error"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn verify_fails_on_a_tampered_local_archive() {
    let (_root, bucket) = local_archive();
    let segment = walk(&bucket)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .expect("a segment");
    std::fs::remove_file(&segment).expect("remove");
    let (code, out) = imgate(
        &[
            "archive",
            "--tenant",
            "acme",
            "--dir",
            bucket.to_str().expect("utf-8"),
            "verify",
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM") && out.contains("segment missing") && out.contains("NOT intact"),
        "{out}"
    );
}

#[test]
fn exports_eml_rsmf_and_json_lines() {
    let (root, bucket) = local_archive();
    let dir = bucket.to_str().expect("utf-8");
    let out_dir = root.path().join("export");
    for format in ["eml", "rsmf", "jsonl"] {
        let target = out_dir.join(format);
        let (code, out) = archive(
            dir,
            &[
                "export",
                "--format",
                format,
                "--out",
                target.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("exported 4 record(s)"), "{out}");
    }
    let eml = std::fs::read_to_string(out_dir.join("eml/conv-jane-2025-11-24.eml"))
        .expect("one EML per conversation-day");
    assert!(
        eml.contains("Subject: IM conversation conv-jane on 2025-11-24 (3 messages)\r\n"),
        "{eml}"
    );
    assert!(
        eml.contains("From: \"surferdood124@chat.example\" <jane.doe@acme.example>\r\n"),
        "{eml}"
    );
    assert!(
        eml.contains("Date: Mon, 24 Nov 2025 16:00:00 +0000\r\n"),
        "{eml}"
    );
    assert!(
        eml.contains("[delivered as: card ███████████████████]"),
        "{eml}"
    );
    assert!(out_dir.join("eml/conv-sam-2025-11-24.eml").exists());

    let rsmf = out_dir.join("rsmf/conv-jane-2025-11-24.rsmf");
    let check = Command::new("python3")
        .args(["-c", RSMF_CHECK, rsmf.to_str().expect("utf-8")])
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "2.0.0 3 3 direct jane.doe@acme.example"
    );

    let lines = std::fs::read_to_string(out_dir.join("jsonl/acme.jsonl")).expect("jsonl");
    let records: Vec<Record> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}

/// Parses an RSMF file as an e-mail, opens its rsmf.zip and prints the version header, the
/// event count header, the events in the manifest, the conversation type and the first
/// participant's e-mail.
const RSMF_CHECK: &str = r#"
import email, io, json, sys, zipfile
message = email.message_from_bytes(open(sys.argv[1], "rb").read())
attachment = [p for p in message.walk() if p.get_filename() == "rsmf.zip"][0]
manifest = json.loads(zipfile.ZipFile(io.BytesIO(attachment.get_payload(decode=True))).read("rsmf_manifest.json"))
emails = [p["email"] for p in manifest["participants"] if "email" in p]
print(message["X-RSMF-Version"], message["X-RSMF-EventCount"], len(manifest["events"]), manifest["conversations"][0]["type"], emails[0])
"#;

#[test]
fn legal_hold_marks_the_segments_of_a_conversation() {
    let (_root, bucket) = local_archive();
    let dir = bucket.to_str().expect("utf-8");
    let (code, out) = archive(dir, &["hold", "set", "--conversation", "conv-jane"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("legal hold placed on 3 segment(s)"), "{out}");
    let holds = walk(&bucket)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".legal-hold"))
        .count();
    assert_eq!(holds, 6, "three segments and their manifests");
    let (code, out) = archive(dir, &["hold", "clear", "--conversation", "conv-jane"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        walk(&bucket)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".legal-hold"))
            .count(),
        0
    );
    let (code, _) = archive(dir, &["hold", "set", "--conversation", "conv-nobody"]);
    assert_eq!(code, 1, "nothing matched");
}

#[test]
fn the_same_tools_work_on_an_s3_bucket() {
    let moto = support::Moto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let endpoint = moto.endpoint();
    runtime.block_on(async {
        let config = S3Config {
            bucket: "archive".into(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.clone()),
            credentials: Some(("test".into(), "test".into())),
            timeout: None,
        };
        let store = S3Store::connect(&config).await;
        store
            .client()
            .create_bucket()
            .bucket("archive")
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .expect("bucket");
        build_archive(Store::S3(store), root.path()).await;
    });
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("IMGATE_S3_ENDPOINT", endpoint.as_str()),
        ("IMGATE_TENANT", "acme"),
    ];
    let (code, out) = imgate(&["archive", "--s3-bucket", "archive", "verify"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact: 1 writer(s), 4 segment(s), 4 record(s) checked in s3://archive"),
        "{out}"
    );
    let (code, out) = imgate(
        &[
            "archive",
            "--s3-bucket",
            "archive",
            "hold",
            "set",
            "--person",
            "sam.lee@acme.example",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("legal hold placed on 1 segment(s)"), "{out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
