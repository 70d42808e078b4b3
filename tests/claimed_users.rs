//! Who a user is: the user name a SOCKS5 client names in its handshake (RFC 1929) is a claim
//! nobody checked, so it selects no policy and names no person. Here a colleague's name,
//! which the Tenant's directory maps to a person whose policy allows HTTP, does not get the
//! claimer past the firm-wide block; the archive keeps the claim as claimed.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use common::{LogsOnFailure, free_port, serve_logged, stop_and_read_tenant};

const TENANT: &str = "acme";

/// A firm that blocks HTTP for everyone but Jane, whose handle `jane` the directory knows.
fn policies(dir: &std::path::Path) {
    std::fs::write(
        dir.join("tenant.yaml"),
        format!(
            "apiVersion: imgate.io/v1alpha1
kind: Tenant
metadata: {{name: {TENANT}}}
spec:
  archive:
    s3: {{bucket: acme-archive, region: eu-west-2}}
    retention: {{days: 30}}
  identity:
    static:
      - {{handle: jane, person: jane@acme.example}}
"
        ),
    )
    .expect("tenant");
    std::fs::write(
        dir.join("policies.yaml"),
        format!(
            "apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {{name: firm-wide, namespace: {TENANT}}}
spec:
  tenantRef: {TENANT}
  priority: 10
  protocols: {{block: [http]}}
---
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {{name: jane, namespace: {TENANT}}}
spec:
  tenantRef: {TENANT}
  priority: 200
  subjects: {{people: [jane@acme.example]}}
  protocols: {{allow: [http]}}
"
        ),
    )
    .expect("policies");
}

#[test]
fn a_claimed_socks_user_selects_no_policy_and_names_no_person() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir(&policy_dir).expect("policy folder");
    policies(&policy_dir);
    let data = dir.path().join("data");
    let log = data.with_extension("log");
    let _logs = LogsOnFailure(vec![log.clone()]);
    let server = TcpListener::bind("127.0.0.1:0").expect("a server");
    let port = server.local_addr().expect("its address").port();
    let socks = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_imgate"));
    command
        .args([
            "up",
            "--tenant",
            TENANT,
            "--http",
            "off",
            "--metrics",
            "off",
        ])
        .args(["--socks", &format!("127.0.0.1:{socks}")])
        .args(["--allow-destination", "127.0.0.0/8", "--seal-seconds", "1"])
        .arg("--policy")
        .arg(&policy_dir)
        .arg("--data")
        .arg(&data);
    let imgate = serve_logged(&mut command, socks, "imgate up", &log);

    let mut client = TcpStream::connect(("127.0.0.1", socks)).expect("SOCKS5 listener");
    // Username and password (RFC 1929), claiming to be Jane.
    client.write_all(&[5, 1, 2]).expect("greeting");
    let mut chosen = [0; 2];
    client.read_exact(&mut chosen).expect("method");
    assert_eq!(chosen, [5, 2], "username/password chosen");
    client
        .write_all(&[
            1, 4, b'j', b'a', b'n', b'e', 5, b'g', b'u', b'e', b's', b's',
        ])
        .expect("credentials");
    let mut accepted = [0; 2];
    client.read_exact(&mut accepted).expect("sub-negotiation");
    let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
    request.extend(port.to_be_bytes());
    client.write_all(&request).expect("request");
    let mut reply = [0; 10];
    client.read_exact(&mut reply).expect("reply");
    assert_eq!(reply[1], 0, "connected");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: intranet\r\n\r\n")
        .expect("the request");
    let (mut upstream, _) = server.accept().expect("the session's upstream");
    // Bounded, so that a session let through fails the test instead of hanging it.
    upstream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("a read timeout");
    let mut reached = Vec::new();
    let _ = upstream.read_to_end(&mut reached);
    assert!(
        reached.is_empty(),
        "a claimed name let HTTP through: {}",
        String::from_utf8_lossy(&reached)
    );
    drop(client);

    let records = stop_and_read_tenant(imgate, &data, TENANT);
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start")
        .expect("a session start record");
    assert_eq!(start["handle"], "jane", "the claim is archived as claimed");
    assert!(
        records.iter().all(|r| r["person"] != "jane@acme.example"),
        "no record names the claimed person: {records:#?}"
    );
    assert!(
        records.iter().all(|r| r["type"] != "identity"),
        "the claim was not resolved: {records:#?}"
    );
}
