//! IRC through `imgate up` between a real server (ngIRCd) and real clients (the Python `irc`
//! library): group and direct chat delivered and archived, a card number redacted in what the
//! recipient sees while the archive keeps the original, a deal name blocked with a notice to
//! the sender, and the disclaimer injected once per conversation; people and groups resolved
//! from the Tenant's static map and from a real LDAP directory (OpenLDAP slapd), the latter
//! named in an identity file as the operator delivers it (`--identity`).

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use common::{Killed, imgate_up, ngircd, presence_of, scrape, slapd, stop_and_read, wait_for_line};

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

fn clients(front: u16, mode: &str) -> Value {
    let output = Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/irc_clients.py"),
            "127.0.0.1",
            &front.to_string(),
            mode,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "IRC clients failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn texts(received: &Value, who: &str, kind: &str) -> Vec<String> {
    received[who]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["kind"] == kind)
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn irc_chat_is_inspected_redacted_blocked_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let metrics_port = support::free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let (imgate, front) = imgate_up(irc_port, &data, &["--metrics", &metrics_address]);
    let received = clients(front, "chat");
    let metrics = scrape(metrics_port);
    assert!(
        metrics.contains("imgate_sessions_total{protocol=\"irc\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imgate_verdicts_total{action=\"redact\"}"),
        "{metrics}"
    );
    // The deal name, and the readiness probe's connection, which said nothing (unknown).
    assert!(
        metrics.contains("imgate_verdicts_total{action=\"block\"} 2")
            && metrics.contains("imgate_sessions_total{protocol=\"unknown\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imgate_archive_unshipped_bytes"),
        "{metrics}"
    );
    assert!(
        metrics.contains("imgate_held_seconds_count{direction=\"outbound\"}")
            && metrics.contains("imgate_held_seconds_count{direction=\"inbound\"}"),
        "how long lines are held, each way: {metrics}"
    );
    let texts = |who: &str, kind: &str| texts(&received, who, kind);
    let channel = texts("bob", "pubmsg");
    assert_eq!(
        channel,
        ["hello team", "card ███████████████████ please"],
        "bob sees the greeting and the redacted card, not the deal: {received}"
    );
    assert_eq!(texts("bob", "privmsg"), ["direct hi"], "{received}");
    let disclaimer = "This conversation is inspected and archived by imgate.";
    assert_eq!(
        texts("bob", "pubnotice"),
        [disclaimer],
        "once for #desk: {received}"
    );
    assert_eq!(
        texts("bob", "privnotice"),
        [disclaimer],
        "once for the direct conversation: {received}"
    );
    assert_eq!(
        texts("alice", "privnotice"),
        ["Blocked by policy local-defaults/deal-names: deal names stay on the desk."],
        "{received}"
    );

    let records = stop_and_read(imgate, &data);
    let messages: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "message" && r["dir"] == "outbound")
        .collect();
    let by_text = |text: &str| {
        messages
            .iter()
            .find(|m| m["text"] == text)
            .copied()
            .unwrap_or_else(|| panic!("no archived message {text:?} in {records:?}"))
    };
    assert_eq!(by_text("hello team")["verdict"]["action"], "allow");
    let card = by_text("card 4111 1111 1111 1111 please");
    assert_eq!(
        (
            card["verdict"]["action"].as_str(),
            card["delivered"].as_str()
        ),
        (Some("redact"), Some("card ███████████████████ please"))
    );
    assert_eq!(card["verdict"]["rules"][0], "local-defaults/card-numbers");
    assert_eq!(card["room"], "#desk");
    let deal = by_text("project falcon is go");
    assert_eq!(deal["verdict"]["action"], "block");
    assert_eq!(by_text("direct hi")["to"][0], "bob");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "session_start" && r["protocol"] == "irc"),
        "sessions are archived"
    );
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "message" && r["dir"] == "inbound" && r["text"] == "hello team"),
        "bob's copy is archived as inbound"
    );
    assert_eq!(
        presence_of(&records, "alice@127.0.0.1"),
        [
            ("join", "#desk", ""),
            ("topic", "#desk", "quarterly numbers"),
            ("leave", "#desk", ""),
            ("nick", "", "alice2"),
        ],
        "alice's join, topic, leave and rename are archived in order"
    );
    assert_eq!(
        presence_of(&records, "bob@127.0.0.1"),
        [("join", "#desk", "")]
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "presence" && r["room"] == "#desk")
            .all(|r| r["conv"] == "irc:127.0.0.1:#desk"),
        "room events belong to the room's conversation"
    );

    let verify = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["archive", "--tenant", "local", "--dir"])
        .arg(data.join("archive"))
        .arg("verify")
        .output()
        .expect("imgate archive runs");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn dcc_file_offers_follow_the_file_transfer_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_up(irc_port, &data, &[]);
    let received = clients(front, "dcc");
    let offers = texts(&received, "bob", "ctcp");
    assert!(
        offers.iter().any(|o| o.contains("report.pdf")),
        "the PDF offer arrives: {received}"
    );
    assert!(
        !offers.iter().any(|o| o.contains("setup.exe")),
        "the executable does not: {received}"
    );
    let notices = texts(&received, "alice", "privnotice");
    assert_eq!(notices.len(), 1, "{received}");
    assert!(
        notices[0].contains("local-defaults/file-transfer"),
        "{received}"
    );
    let records = stop_and_read(imgate, &data);
    let offer = |name: &str| {
        records
            .iter()
            .find(|r| r["type"] == "file_offer" && r["name"] == name)
            .unwrap_or_else(|| panic!("no archived offer of {name}: {records:?}"))
    };
    assert_eq!(offer("setup.exe")["verdict"]["action"], "block");
    assert_eq!(offer("report.pdf")["verdict"]["action"], "allow");
}

#[test]
fn monitor_mode_changes_nothing_but_records_what_would_have_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/monitor");
    let (imgate, front) = imgate_up(irc_port, &data, &["--policy", policy]);
    let received = clients(front, "chat");
    assert_eq!(
        texts(&received, "bob", "pubmsg"),
        [
            "hello team",
            "card 4111 1111 1111 1111 please",
            "project falcon is go"
        ],
        "nothing is changed: {received}"
    );
    assert!(
        texts(&received, "alice", "privnotice").is_empty()
            && texts(&received, "bob", "pubnotice").is_empty(),
        "no notices, no disclaimer: {received}"
    );
    let records = stop_and_read(imgate, &data);
    let outbound = |text: &str| {
        records
            .iter()
            .find(|r| r["type"] == "message" && r["dir"] == "outbound" && r["text"] == text)
            .unwrap_or_else(|| panic!("no archived {text:?}"))
    };
    let card = outbound("card 4111 1111 1111 1111 please");
    assert_eq!(
        (
            card["verdict"]["action"].as_str(),
            card["verdict"]["monitor"].as_str()
        ),
        (Some("allow"), Some("redact"))
    );
    assert!(card.get("delivered").is_none(), "delivered as sent");
    assert_eq!(
        outbound("project falcon is go")["verdict"]["monitor"],
        "block"
    );
}

#[test]
fn a_blocked_protocol_never_reaches_the_server() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_up(irc_port, &data, &[]);
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    peer.write_all(b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0")
        .expect("handshake");
    let mut answer = Vec::new();
    let _ = peer.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the connection is closed without a byte from the server: {answer:?}"
    );
    let records = stop_and_read(imgate, &data);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "session_start" && r["protocol"] == "bittorrent"),
        "{records:?}"
    );
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start" && r["protocol"] == "bittorrent")
        .expect("the session start is archived");
    let end = records
        .iter()
        .find(|r| r["type"] == "session_end" && r["session"] == start["session"])
        .expect("session end archived");
    assert_eq!(
        end["reason"],
        "refused by policy (local-defaults/protocols)"
    );
}

#[test]
fn an_oversized_line_is_refused_in_protocol_and_recorded() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let metrics = support::free_port();
    let (imgate, front) = imgate_up(
        irc_port,
        &data,
        &["--metrics", &format!("127.0.0.1:{metrics}")],
    );
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.write_all(b"NICK tester\r\nUSER tester 0 * :Tester\r\n")
        .expect("register");
    // A line of a megabyte: dropped whole, as one line, however many reads it takes.
    let mut line = b"PRIVMSG #desk :".to_vec();
    line.extend(std::iter::repeat_n(b'a', 1 << 20));
    line.extend_from_slice(b"\r\n");
    peer.write_all(&line).expect("oversized line");
    // A shorter one with the next lines in the same write: those lines are kept.
    let mut short = b"PRIVMSG #desk :".to_vec();
    short.extend(std::iter::repeat_n(b'b', 9000));
    short.extend_from_slice(b"\r\n");
    peer.write_all(&[short.as_slice(), b"PING :after-the-long-line\r\n"].concat())
        .expect("more lines");
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline
        && !String::from_utf8_lossy(&seen).contains("after-the-long-line")
    {
        if let Ok(n) = peer.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains(":imgate 417 tester :Input line was too long"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    drop(peer);
    // The session ends when its client does (it is not left open).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scrape(metrics).contains("imgate_sessions_active 0") {
        assert!(Instant::now() < deadline, "the session never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = stop_and_read(imgate, &data);
    let dropped: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "system" && r["event"] == "irc-line-too-long")
        .collect();
    assert_eq!(dropped.len(), 2, "one record for each line: {dropped:?}");
    for (record, length) in dropped.iter().zip([line.len(), short.len()]) {
        assert!(
            record["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("line of {length} bytes"))),
            "{dropped:?}"
        );
    }
}

const POLICY_V1: &str = "apiVersion: imgate.io/v1alpha1\nkind: IMPolicy\nmetadata: {name: cards, namespace: imgate}\nspec:\n  tenantRef: local\n  content:\n    - {name: card-numbers, match: {detector: credit-card}, action: redact}\n";
const POLICY_V2: &str = "apiVersion: imgate.io/v1alpha1\nkind: IMPolicy\nmetadata: {name: cards, namespace: imgate}\nspec:\n  tenantRef: local\n  content:\n    - {name: card-numbers, match: {detector: credit-card}, action: block, notify: {sender: cards are blocked now}}\n";
const POLICY_BROKEN: &str = "apiVersion: imgate.io/v1alpha1\nkind: IMPolicy\nmetadata: {name: cards, namespace: imgate}\nspec:\n  tenantRef: local\n  content:\n    - {name: card-numbers, match: {regex: \"(unclosed\"}, action: alert}\n";

#[test]
fn a_changed_policy_file_applies_to_open_sessions_and_a_bad_one_is_refused() {
    reload_scenario(Reload::Poll);
}

#[test]
fn sighup_reloads_the_policy_files_at_once() {
    reload_scenario(Reload::Signal);
}

/// How the dataplane learns that its policy files changed.
#[derive(Clone, Copy)]
enum Reload {
    /// It looks at them every second.
    Poll,
    /// It is sent SIGHUP (and does not look on its own).
    Signal,
}

/// A session stays open while the policy changes from redacting cards to blocking them, and
/// then to a set that does not compile: the block applies to the open session, and the broken
/// set is refused with the block still in force.
fn reload_scenario(how: Reload) {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policies");
    std::fs::write(policies.join("cards.yaml"), POLICY_V1).expect("v1");
    let data = dir.path().join("data");
    let poll = match how {
        Reload::Poll => "1",
        Reload::Signal => "0",
    };
    let (imgate, front) = imgate_up(
        irc_port,
        &data,
        &[
            "--policy",
            policies.to_str().expect("utf-8"),
            "--policy-poll-seconds",
            poll,
        ],
    );
    let log = data.with_extension("log");
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut read_for = |peer: &mut TcpStream, wait: Duration| {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = peer.read(&mut chunk) {
                seen.extend_from_slice(&chunk[..n]);
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    };
    peer.write_all(b"NICK reloader\r\nUSER reloader 0 * :R\r\nJOIN #desk\r\n")
        .expect("register");
    read_for(&mut peer, Duration::from_secs(1));
    let (reloaded, refused) = match how {
        Reload::Poll => ("policy changed, reloaded", "policy changed, not reloaded"),
        Reload::Signal => (
            "policy signalled, reloaded",
            "policy signalled, not reloaded",
        ),
    };
    let pid = imgate.0.id();
    let tell = || {
        if let Reload::Signal = how {
            assert!(
                Command::new("kill")
                    .args(["-HUP", &pid.to_string()])
                    .status()
                    .expect("kill")
                    .success()
            );
        }
    };
    peer.write_all(b"PRIVMSG #desk :card 4111 1111 1111 1111\r\n")
        .expect("first");
    read_for(&mut peer, Duration::from_millis(500));
    std::fs::write(policies.join("cards.yaml"), POLICY_V2).expect("v2");
    tell();
    wait_for_line(&log, &[reloaded]);
    peer.write_all(b"PRIVMSG #desk :card 4111 1111 1111 1111\r\n")
        .expect("second");
    std::fs::write(policies.join("cards.yaml"), POLICY_BROKEN).expect("broken");
    tell();
    wait_for_line(&log, &[refused]);
    peer.write_all(b"PRIVMSG #desk :card 4111 1111 1111 1111\r\n")
        .expect("third");
    let seen = read_for(&mut peer, Duration::from_secs(1));
    assert_eq!(
        seen.matches(":imgate NOTICE reloader :cards are blocked now")
            .count(),
        2,
        "blocked after the reload, still blocked after the broken one: {seen}"
    );
    drop(peer);
    let records = stop_and_read(imgate, &data);
    let cards: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "message" && r["dir"] == "outbound")
        .collect();
    let actions: Vec<&str> = cards
        .iter()
        .map(|r| r["verdict"]["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["redact", "block", "block"], "{cards:?}");
    assert!(
        cards.iter().all(|r| r["session"] == cards[0]["session"]),
        "one session throughout"
    );
}

/// Alice and Bob chat through `imgate up` enforcing `tests/fixtures/identity/policy.yaml`
/// (a greeting blocked for traders only): checks that Alice was resolved as Alice Smith, a
/// trader, and returns the archive.
fn alice_is_held_to_the_traders_policy(front: u16, imgate: Killed, data: &Path) -> Vec<Value> {
    let received = clients(front, "chat");
    assert!(
        !texts(&received, "bob", "pubmsg").contains(&"hello team".to_owned()),
        "alice is a trader: {received}"
    );
    assert!(
        texts(&received, "bob", "pubmsg").contains(&"card 4111 1111 1111 1111 please".to_owned()),
        "{received}"
    );
    let records = stop_and_read(imgate, data);
    let greeting = records
        .iter()
        .find(|r| r["type"] == "message" && r["dir"] == "outbound" && r["text"] == "hello team")
        .expect("archived");
    assert_eq!(greeting["from"]["person"], "alice.smith@acme.example");
    assert_eq!(greeting["verdict"]["rules"][0], "desk/trader-greetings");
    records
}

#[test]
fn identities_come_from_the_tenant_and_subjects_apply_to_people() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity");
    let (imgate, front) = imgate_up(irc_port, &data, &["--policy", policy]);
    let records = alice_is_held_to_the_traders_policy(front, imgate, &data);
    let inbound = records
        .iter()
        .find(|r| {
            r["type"] == "message"
                && r["dir"] == "inbound"
                && r["text"] == "card 4111 1111 1111 1111 please"
        })
        .expect("bob's copy archived");
    assert_eq!(
        inbound["from"]["person"], "alice.smith@acme.example",
        "resolved in both directions"
    );
}

#[test]
fn identities_come_from_the_ldap_directory_and_are_archived_once_per_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_directory, ldap_port) = slapd(dir.path());
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    // As a dataplane in a cluster gets them: the policy set and the Tenant's
    // `spec.identity`, side by side in the policy ConfigMap.
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).expect("policy folder");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/identity/policy.yaml"
        ),
        policy.join("policy.yaml"),
    )
    .expect("policy");
    std::fs::write(
        policy.join("identity.yaml"),
        format!(
            "ldap:\n  url: ldap://127.0.0.1:{ldap_port}\n  baseDN: ou=people,dc=acme,dc=example\n  handleAttributes: {{irc: imHandle}}\n  groupAttribute: departmentNumber\n"
        ),
    )
    .expect("identity");
    let (imgate, front) = imgate_up(
        irc_port,
        &data,
        &[
            "--policy",
            &policy.join("policy.yaml").to_string_lossy(),
            "--identity",
            &policy.join("identity.yaml").to_string_lossy(),
        ],
    );
    let records = alice_is_held_to_the_traders_policy(front, imgate, &data);
    let identities: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "identity" && r["handle"] == "alice@127.0.0.1")
        .collect();
    assert!(!identities.is_empty(), "who alice was is archived");
    for identity in &identities {
        assert_eq!(identity["person"], "alice.smith@acme.example");
        assert_eq!(identity["groups"][0], "traders");
        assert_eq!(identity["source"], "ldap");
    }
    let sessions: std::collections::HashSet<&str> = identities
        .iter()
        .map(|r| r["conv"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        sessions.len(),
        identities.len(),
        "once per session: {identities:?}"
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "identity")
            .all(|r| r["handle"] != "bob@127.0.0.1"),
        "bob is not in the directory, so he is not resolved"
    );
}

#[test]
fn formatting_codes_hide_nothing_and_passwords_to_services_are_not_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_up(irc_port, &data, &[]);
    let received = clients(front, "evasion");
    let channel = texts(&received, "bob", "pubmsg");
    assert!(
        channel.iter().all(|t| !t.contains("falcon")),
        "the deal name in bold is blocked: {channel:?}"
    );
    assert!(
        channel
            .iter()
            .any(|t| t.starts_with("card ███") && !t.contains("4111")),
        "the card number with formatting inside is redacted: {channel:?}"
    );
    let records = stop_and_read(imgate, &data);
    let outbound = |start: &str| {
        records
            .iter()
            .find(|r| {
                r["type"] == "message"
                    && r["dir"] == "outbound"
                    && r["text"].as_str().is_some_and(|t| t.starts_with(start))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no record of {start:?}: {records:?}"))
    };
    let deal = outbound("project \u{2}falcon\u{2}");
    assert_eq!(deal["verdict"]["action"], "block", "{deal}");
    let card = outbound("card 4111\u{2}");
    assert_eq!(card["verdict"]["action"], "redact", "{card}");
    assert_eq!(
        card["text"], "card 4111\u{2} 1111 \u{3}04,121111\u{3} 1111 please",
        "the archive keeps the original, formatting included"
    );
    let identify = outbound("IDENTIFY");
    assert_eq!(identify["text"], "IDENTIFY [credentials withheld]");
    assert_eq!(identify["to"][0], "NickServ");
    for record in &records {
        assert!(
            !record.to_string().contains("hunter2-secret"),
            "the password reached the archive: {record}"
        );
    }
}

#[test]
fn text_that_is_not_utf8_is_archived_with_its_bytes_as_sent() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_up(irc_port, &data, &[]);
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.write_all(b"NICK latin\r\nUSER latin 0 * :Latin\r\nPRIVMSG bob :caf\xe9 cr\xe8me\r\n")
        .expect("lines");
    // The server's answer to the next line shows the message was handled.
    peer.write_all(b"PING :handled\r\n").expect("ping");
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains("handled") {
        if let Ok(n) = peer.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
        }
    }
    drop(peer);
    let records = stop_and_read(imgate, &data);
    let message = records
        .iter()
        .find(|r| r["type"] == "message" && r["to"][0] == "bob")
        .unwrap_or_else(|| panic!("no record of the message: {records:?}"));
    assert_eq!(message["text"], "caf\u{fffd} cr\u{fffd}me");
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        message["text_base64"].as_str().expect("the bytes as sent"),
    )
    .expect("base64");
    assert_eq!(bytes, b"caf\xe9 cr\xe8me");
}
