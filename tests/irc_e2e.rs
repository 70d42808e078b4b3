//! IRC through `imgate up` between a real server (ngIRCd) and real clients (the Python `irc`
//! library): group and direct chat delivered and archived, a card number redacted in what the
//! recipient sees while the archive keeps the original, a deal name blocked with a notice to
//! the sender, and the disclaimer injected once per conversation.

#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ngircd(dir: &Path) -> (Killed, u16) {
    let port = support::free_port();
    let config = dir.join("ngircd.conf");
    std::fs::write(
        &config,
        format!(
            "[Global]\nName = irc.test.local\nInfo = imgate test\nListen = 127.0.0.1\nPorts = {port}\nAdminInfo1 = imgate\nAdminInfo2 = test\nAdminEMail = admin@test.local\nPidFile = {}\n[Limits]\nMaxConnectionsIP = 0\n[Options]\nPAM = no\nDNS = no\nIdent = no\n",
            dir.join("ngircd.pid").display()
        ),
    )
    .expect("config");
    let child = Command::new("ngircd")
        .args(["-n", "-f", config.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ngircd runs: scripts/test installs it (apt-get install ngircd)");
    let server = Killed(child);
    wait_for_port(port, "ngircd");
    (server, port)
}

#[test]
fn irc_chat_is_inspected_redacted_blocked_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, irc_port) = ngircd(dir.path());
    let front = support::free_port();
    let data = dir.path().join("data");
    let imgate = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args([
            "up",
            "--socks",
            "off",
            "--http",
            "off",
            "--forward",
            &format!("127.0.0.1:{front}=127.0.0.1:{irc_port}"),
            "--data",
            data.to_str().expect("utf-8"),
            "--seal-seconds",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("imgate up runs");
    let imgate = Killed(imgate);
    wait_for_port(front, "imgate up");

    let clients = Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/irc_clients.py"),
            "127.0.0.1",
            &front.to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        clients.status.success(),
        "IRC clients failed: {}",
        String::from_utf8_lossy(&clients.stderr)
    );
    let received: Value = serde_json::from_slice(&clients.stdout).expect("JSON");
    let texts = |who: &str, kind: &str| -> Vec<String> {
        received[who]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["kind"] == kind)
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
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

    let pid = imgate.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut imgate = imgate;
    let deadline = Instant::now() + Duration::from_secs(30);
    while imgate.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "imgate up did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let archive = data.join("archive");
    let search = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args([
            "archive",
            "--tenant",
            "local",
            "--dir",
            archive.to_str().expect("utf-8"),
            "search",
            "--json",
        ])
        .output()
        .expect("imgate archive runs");
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    let records: Vec<Value> = String::from_utf8_lossy(&search.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
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

    let verify = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args([
            "archive",
            "--tenant",
            "local",
            "--dir",
            archive.to_str().expect("utf-8"),
            "verify",
        ])
        .output()
        .expect("imgate archive runs");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
