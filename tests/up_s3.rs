//! `imgate up` as a dataplane in a cluster runs it: the archive shipped to the tenant's
//! bucket in a real S3 API server (moto) under Object Lock and SSE-KMS, named by the pod, with the
//! interception CA from a folder of its own; and `imgate operator render` and `check` on the
//! examples.

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use common::{imgate_output, imgate_up_with_env, stop_and_read};

const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
];

/// Echoes every connection's bytes back until it closes.
fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("echo");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn imgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (code, text) = imgate_output(args, env);
    (code == 0, text)
}

#[test]
fn the_archive_goes_to_the_tenants_bucket_locked_and_named_by_the_pod() {
    let moto = support::Moto::start();
    let endpoint = moto.endpoint();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime.block_on(common::s3_bucket(&endpoint, "acme-archive", true));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ca = dir.path().join("interception-ca");
    // The echo server speaks no protocol imgate knows: a policy that lets it through.
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).expect("policy folder");
    std::fs::write(
        policy.join("policy.yaml"),
        std::fs::read_to_string(
            std::path::Path::new(common::RELAY_UNIDENTIFIED).join("policy.yaml"),
        )
        .expect("the fixture")
        .replace("tenantRef: local", "tenantRef: acme"),
    )
    .expect("policy");
    let (imgate_up, front) = imgate_up_with_env(
        echo(),
        &data,
        &[
            "--policy",
            policy.to_str().expect("path"),
            "--tenant",
            "acme",
            "--s3-bucket",
            "acme-archive",
            "--s3-endpoint",
            &endpoint,
            "--s3-prefix",
            "im",
            "--retention-days",
            "7",
            "--writer",
            "dataplane-0",
            "--s3-encryption",
            "kms",
            "--s3-kms-key",
            "alias/acme-archive",
            "--interception-ca",
            ca.to_str().expect("path"),
        ],
        &KEYS,
    );
    assert!(
        ca.join("ca.pem").exists(),
        "the interception CA is made in its own folder"
    );
    assert!(!data.join("ca").exists());

    let mut client = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    client
        .write_all(b"\x00\x01not a protocol\x02")
        .expect("write");
    let mut back = [0u8; 17];
    client.read_exact(&mut back).expect("echo");
    drop(client);
    // Stopping flushes the archive to the bucket; nothing is left in a local folder.
    let local = stop_and_read(imgate_up, &data);
    assert!(local.is_empty(), "nothing archived locally: {local:?}");

    let env = [KEYS[0], KEYS[1], ("IMGATE_S3_ENDPOINT", endpoint.as_str())];
    let (ok, out) = imgate(
        &[
            "archive",
            "--tenant",
            "acme",
            "--s3-bucket",
            "acme-archive",
            "--prefix",
            "im",
            "verify",
        ],
        &env,
    );
    assert!(ok, "{out}");
    assert!(out.contains("intact: 1 writer(s)"), "{out}");
    let keys = runtime.block_on(async {
        let listed = store
            .client()
            .list_objects_v2()
            .bucket("acme-archive")
            .send()
            .await
            .expect("list");
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        for key in &keys {
            let head = store
                .client()
                .head_object()
                .bucket("acme-archive")
                .key(key)
                .send()
                .await
                .expect("head");
            assert_eq!(
                head.object_lock_mode().map(|m| m.as_str()),
                Some("COMPLIANCE"),
                "{key}"
            );
            assert!(head.object_lock_retain_until_date().is_some(), "{key}");
            assert_eq!(
                head.server_side_encryption().map(|e| e.as_str()),
                Some("aws:kms"),
                "{key}"
            );
            assert!(
                head.ssekms_key_id()
                    .is_some_and(|k| k.ends_with("alias/acme-archive")),
                "{key}: {:?}",
                head.ssekms_key_id()
            );
        }
        keys
    });
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k.starts_with("im/") && k.contains("dataplane-0")),
        "{keys:?}"
    );
}

#[test]
fn render_previews_the_examples_and_check_accepts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("rendered.yaml");
    let (ok, out) = imgate(
        &[
            "operator",
            "render",
            "examples/broker-dealer",
            "examples/small-firm",
            "--tunnel-domain",
            "tunnel.msp.example",
            "--api-server-cidr",
            "172.18.0.2/32",
        ],
        &[],
    );
    assert!(ok, "{out}");
    std::fs::write(&rendered, &out).expect("write");
    assert_eq!(
        out.lines().filter(|l| *l == "kind: StatefulSet").count(),
        2,
        "{out}"
    );
    assert!(out.contains("meridian-capital.tunnel.msp.example"), "{out}");
    let (ok, checked) = imgate(
        &["operator", "check", rendered.to_str().expect("path")],
        &[],
    );
    assert!(ok, "{checked}");
    // 29 objects less the 7 generated Secrets, which render names in comments only.
    assert!(
        checked.contains(
            "22 objects, each the type it claims to be, valid as the API server validates it"
        ),
        "{checked}"
    );
    assert_eq!(
        out.matches("made once by the operator in the cluster")
            .count(),
        7,
        "{out}"
    );

    // A policy that does not compile: reported, no policy ConfigMap, and a failing exit.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: broken, namespace: ops}
spec:
  tenantRef: harbor-dental
  content:
    - name: words
      match: {regex: '(unclosed'}
      action: block
",
    )
    .expect("write");
    let (ok, out) = imgate(
        &[
            "operator",
            "render",
            "examples/small-firm/tenant.yaml",
            bad.to_str().expect("path"),
        ],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("ops/broken"), "{out}");
    assert!(!out.contains("kind: ConfigMap"), "{out}");
}
