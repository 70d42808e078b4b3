//! Real XMPP clients (slixmpp, `tests/xmpp_clients.py`) through imgate, and the checks on
//! what they received and what was archived that more than one test makes.

use std::path::Path;

use serde_json::Value;

/// Runs the clients in `mode` (with its arguments) through imgate at `front`.
pub fn clients(front: u16, ca: &Path, mode: &[&str]) -> Value {
    clients_in(None, front, ca, mode)
}

/// [`clients`], run in network namespace `netns` if given.
pub fn clients_in(netns: Option<&str>, front: u16, ca: &Path, mode: &[&str]) -> Value {
    let output = super::in_netns(netns, "python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xmpp_clients.py"),
            "127.0.0.1",
            &front.to_string(),
        ])
        .arg(ca)
        .args(mode)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "XMPP clients failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "JSON from the clients: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Checks what alice and bob received in `chat` mode and what was archived: the disclaimer
/// once, the card redacted for bob and kept whole in the archive, the deal name bounced to
/// alice as a policy violation, bob's copies archived.
pub fn check_inspected_chat(received: &Value, records: &[Value]) {
    let bodies = |who: &str, kind: &str| -> Vec<String> {
        received[who]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["type"] == kind)
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        bodies("bob", "chat"),
        [
            "This conversation is inspected and archived by imgate.",
            "hello bob",
            "card ███████████████████ please",
            "bye"
        ],
        "bob gets the disclaimer once, the redacted card and not the deal: {received}"
    );
    let errors: Vec<&Value> = received["alice"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{received}");
    let raw = errors[0]["raw"].as_str().unwrap_or_default();
    assert!(
        raw.contains("<policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\""),
        "a stanza error with the policy-violation condition: {raw}"
    );
    assert!(
        raw.contains("Blocked by policy local-defaults/deal-names: deal names stay on the desk."),
        "{raw}"
    );
    let outbound = |text: &str| {
        records
            .iter()
            .find(|r| r["type"] == "message" && r["dir"] == "outbound" && r["text"] == text)
            .unwrap_or_else(|| panic!("no archived {text:?}: {records:?}"))
    };
    let card = outbound("card 4111 1111 1111 1111 please");
    assert_eq!(
        (
            card["verdict"]["action"].as_str(),
            card["delivered"].as_str()
        ),
        (Some("redact"), Some("card ███████████████████ please"))
    );
    assert_eq!(card["from"]["handle"], "alice@localhost");
    assert_eq!(card["to"][0], "bob@localhost");
    assert_eq!(
        outbound("project falcon is go")["verdict"]["action"],
        "block"
    );
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "message" && r["dir"] == "inbound" && r["text"] == "hello bob"),
        "bob's copy archived too"
    );
}
