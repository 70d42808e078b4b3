//! XMPP through `imgate up` between a real server (Prosody, STARTTLS required) and real
//! clients (slixmpp) that trust imgate's interception CA: STARTTLS is intercepted, chat is
//! delivered and archived, a card number is redacted for the recipient while the archive
//! keeps the original, a deal name is bounced to the sender as a policy violation, the
//! disclaimer goes out once, in 1:1 chat (over STARTTLS and over direct TLS) and in a
//! multi-user chat room on Prosody's MUC component; and when the server's certificate does
//! not verify, imgate refuses to intercept and the client cannot log in.

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use common::xmpp::{check_inspected_chat, clients};
use common::{Killed, imgate_up, presence_of, prosody, prosody_with_direct_tls, stop_and_read};

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `imgate up` in front of Prosody on `port`, trusting its certificate `server_cert`.
fn imgate_trusting(port: u16, server_cert: &Path, data: &Path) -> (Killed, u16) {
    imgate_up(
        port,
        data,
        &["--extra-roots", &server_cert.to_string_lossy()],
    )
}

#[test]
fn xmpp_chat_is_intercepted_inspected_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data-ok");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let received = clients(front, &data.join("ca/ca.pem"), &["chat"]);
    let records = stop_and_read(imgate, &data);
    check_inspected_chat(&received, &records);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "session_start" && r["protocol"] == "xmpp")
    );
}

#[test]
fn a_server_certificate_that_does_not_verify_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, _server_cert) = prosody(dir.path());
    let data = dir.path().join("data-refused");
    let (imgate, front) = imgate_up(port, &data, &[]);
    let outcome = clients(front, &data.join("ca/ca.pem"), &["login"]);
    assert_eq!(outcome["logged_in"], false, "{outcome}");
    // The client is told why, and the session ends at once.
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.write_all(b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        .expect("header");
    let features = read_until(&mut peer, "</stream:features>");
    assert!(features.contains("starttls"), "{features}");
    peer.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .expect("starttls");
    let answer = read_until(&mut peer, "</stream:stream>");
    assert!(
        answer.contains("<remote-connection-failed")
            && answer.contains("imgate refused the certificate of localhost"),
        "{answer}"
    );
    peer.set_read_timeout(None).expect("blocking");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut peer, &mut rest).expect("the session ends");
    let records = stop_and_read(imgate, &data);
    let refusal = records
        .iter()
        .find(|r| r["type"] == "system" && r["event"] == "tls-upstream-refused")
        .unwrap_or_else(|| panic!("no refusal archived: {records:?}"));
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("localhost:"),
        "{refusal}"
    );
}

/// Reads from `peer` until `needle` appears or 10 s pass; returns what was read.
fn read_until(peer: &mut TcpStream, needle: &str) -> String {
    use std::io::Read;
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(needle) {
        match peer.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn malformed_and_oversized_streams_end_with_a_stream_error_and_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data-broken");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let cases: [(Vec<u8>, &str); 2] = [
        (
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></message>".to_vec(),
            "<not-well-formed",
        ),
        (
            [
                b"<message to='bob@localhost'><body>".as_slice(),
                &vec![b'a'; 300 * 1024],
            ]
            .concat(),
            "<policy-violation",
        ),
    ];
    for (payload, condition) in cases {
        let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
        peer.write_all(header.as_bytes()).expect("header");
        let features = read_until(&mut peer, "</stream:features>");
        assert!(features.contains("starttls"), "{features}");
        let _ = peer.write_all(&payload);
        let answer = read_until(&mut peer, "</stream:stream>");
        assert!(
            answer.contains("<stream:error>") && answer.contains(condition),
            "expected {condition} in {answer}"
        );
    }
    let records = stop_and_read(imgate, &data);
    let errors: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "system" && r["event"] == "xmpp-stream-error")
        .collect();
    assert_eq!(errors.len(), 2, "{records:?}");
    assert!(
        errors.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stanza too large")),
        "{errors:?}"
    );
}

#[test]
fn group_chat_in_a_muc_room_is_inspected_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let received = clients(front, &data.join("ca/ca.pem"), &["muc"]);
    let room_messages = |who: &str| -> Vec<String> {
        received[who]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["type"] == "groupchat" && m["from"] == "desk@conference.localhost/alice")
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let expected = [
        "This conversation is inspected and archived by imgate.",
        "hello room",
        "card ███████████████████ please",
        "bye room",
    ];
    assert_eq!(
        room_messages("bob"),
        expected,
        "the room gets the disclaimer once, the redacted card and not the deal: {received}"
    );
    assert_eq!(room_messages("alice"), expected, "the room echoes to alice");
    let errors: Vec<&str> = received["alice"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "error")
        .filter_map(|m| m["raw"].as_str())
        .collect();
    assert_eq!(errors.len(), 1, "{received}");
    assert!(
        errors[0].contains("<policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"")
            && errors[0].contains("from=\"desk@conference.localhost\""),
        "the block is reported to alice as coming from the room: {}",
        errors[0]
    );
    let records = stop_and_read(imgate, &data);
    let sent = |text: &str| {
        records
            .iter()
            .find(|r| r["type"] == "message" && r["dir"] == "outbound" && r["text"] == text)
            .unwrap_or_else(|| panic!("no archived {text:?}: {records:?}"))
    };
    let card = sent("card 4111 1111 1111 1111 please");
    assert_eq!(
        (
            card["kind"].as_str(),
            card["room"].as_str(),
            card["conv"].as_str(),
            card["verdict"]["action"].as_str(),
            card["delivered"].as_str(),
        ),
        (
            Some("group"),
            Some("desk@conference.localhost"),
            Some("xmpp:desk@conference.localhost"),
            Some("redact"),
            Some("card ███████████████████ please")
        )
    );
    assert_eq!(sent("project falcon is go")["verdict"]["action"], "block");
    let copies: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "message" && r["text"] == "hello room")
        .collect();
    let inbound = copies.iter().filter(|r| r["dir"] == "inbound").count();
    assert_eq!(
        inbound, 2,
        "each member's copy is archived with its session"
    );
    let ids: std::collections::BTreeSet<&str> =
        copies.iter().filter_map(|r| r["msgid"].as_str()).collect();
    assert_eq!(
        (ids.len(), copies.len()),
        (1, 3),
        "the sender's capture and each member's copy carry the message's one id: {copies:?}"
    );
    let room = "desk@conference.localhost";
    assert_eq!(
        presence_of(&records, "alice@localhost"),
        [("join", room, "alice"), ("leave", room, "alice")],
        "alice's join (once, though clients repeat it) and leave"
    );
    assert_eq!(
        presence_of(&records, "bob@localhost"),
        [("join", room, "bob")]
    );
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "presence")
            .all(|r| r["conv"] == "xmpp:desk@conference.localhost"),
        "room events belong to the room's conversation"
    );
}

#[test]
fn stream_management_does_not_cross_imgate_so_no_count_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let seen = clients(
        front,
        &data.join("ca/ca.pem"),
        &["sm", &port.to_string(), &server_cert.to_string_lossy()],
    );
    assert_eq!(
        seen["laptop"], "enabled",
        "the server offers stream management to a client that reaches it directly: {seen}"
    );
    assert_eq!(
        seen["answer"], "failed: feature-not-implemented",
        "through imgate, asking for it is refused: {seen}"
    );
    assert_eq!(
        seen["acks"],
        serde_json::json!([]),
        "no acknowledgement counts what imgate blocked as sent: {seen}"
    );
    let delivered: Vec<&str> = seen["bob"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|body| body.starts_with("hello bob") || body.contains("falcon"))
        .collect();
    assert_eq!(
        delivered,
        (0..5).map(|n| format!("hello bob {n}")).collect::<Vec<_>>(),
        "{seen}"
    );
    assert_eq!(
        seen["alice"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|kind| *kind == "error")
            .count(),
        5,
        "each blocked message bounced: {seen}"
    );
    let records = stop_and_read(imgate, &data);
    assert!(
        !records
            .iter()
            .any(|r| r.to_string().contains("urn:xmpp:sm")),
        "stream management is no message"
    );
}

#[test]
fn carbon_copies_are_judged_and_archived_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let received = clients(
        front,
        &data.join("ca/ca.pem"),
        &["carbons", &port.to_string(), &server_cert.to_string_lossy()],
    );
    let carbons: Vec<(&str, &str)> = received["phone"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["type"].as_str().unwrap_or_default(),
                m["body"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        carbons,
        [
            (
                "carbon-received",
                "This conversation is inspected and archived by imgate."
            ),
            ("carbon-received", "hello laptop"),
            ("carbon-sent", "hello from the laptop")
        ],
        "the phone, behind imgate, gets both carbons: {received}"
    );
    let records = stop_and_read(imgate, &data);
    let archived = |text: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["type"] == "message" && r["text"] == text)
            .collect()
    };
    // Bob's message went out through imgate, so its carbon to the phone is a copy.
    let to_laptop = archived("hello laptop");
    assert_eq!(to_laptop.len(), 1, "{to_laptop:?}");
    assert_eq!(
        (
            to_laptop[0]["dir"].as_str(),
            to_laptop[0]["from"]["handle"].as_str()
        ),
        (Some("outbound"), Some("bob@localhost"))
    );
    // The laptop's message reached imgate twice, as the phone's carbon and as bob's copy;
    // whichever came first is archived, as sent by alice to bob.
    assert!(
        archived("This conversation is inspected and archived by imgate.").is_empty(),
        "the carbon of imgate's own disclaimer is not taken for a message"
    );
    let from_laptop = archived("hello from the laptop");
    assert_eq!(from_laptop.len(), 1, "{from_laptop:?}");
    assert_eq!(from_laptop[0]["from"]["handle"], "alice@localhost");
    assert_eq!(from_laptop[0]["conv"], "xmpp:alice@localhost/bob@localhost");
}

#[test]
fn xmpp_over_direct_tls_is_intercepted_inspected_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, _, tls_port, server_cert) = prosody_with_direct_tls(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(tls_port, &server_cert, &data);
    let received = clients(front, &data.join("ca/ca.pem"), &["direct"]);
    let records = stop_and_read(imgate, &data);
    check_inspected_chat(&received, &records);
    let intercepted: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "session_start" && r["tls"] == "intercept")
        .collect();
    assert_eq!(
        intercepted.len(),
        2,
        "alice's and bob's sessions: {records:?}"
    );
    assert!(intercepted.iter().all(|r| r["protocol"] == "tls"));
    let card = records
        .iter()
        .find(|r| r["type"] == "message" && r["text"] == "card 4111 1111 1111 1111 please")
        .expect("archived");
    assert!(
        intercepted.iter().any(|r| r["session"] == card["session"]),
        "the message was read inside the intercepted TLS session"
    );
}

/// A client that asks for STARTTLS at `front` and completes TLS with imgate, trusting the
/// interception CA `ca`; its stream is open past the second stream's features.
fn intercepted_client(
    front: u16,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.write_all(header.as_bytes()).expect("header");
    let features = read_until(&mut peer, "</stream:features>");
    assert!(features.contains("starttls"), "{features}");
    peer.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .expect("starttls");
    assert!(read_until(&mut peer, "<proceed").contains("<proceed"));
    let mut roots = rustls::RootCertStore::empty();
    for root in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(root.expect("CA certificate")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("connection");
    let mut tls = rustls::StreamOwned::new(connection, peer);
    tls.write_all(header.as_bytes()).expect("header over TLS");
    let features = read_tls_until(&mut tls, "</stream:features>");
    assert!(features.contains("mechanisms"), "{features}");
    tls
}

/// [`read_until`] over TLS.
fn read_tls_until(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    needle: &str,
) -> String {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains(needle) {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("reading over TLS: {error}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn an_intercepted_session_ends_with_close_notify_and_a_truncation_is_recorded() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data-close");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let ca = data.join("ca/ca.pem");

    // The client closes its stream and its TLS: imgate ends the session and the client
    // hears imgate's close_notify (rustls reports an end without one as an error).
    let mut tls = intercepted_client(front, &ca);
    tls.write_all(b"</stream:stream>").expect("stream close");
    tls.conn.send_close_notify();
    tls.flush().expect("close_notify");
    tls.sock
        .set_read_timeout(None)
        .expect("no read timeout while waiting for the end");
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("imgate ends the client's TLS stream with close_notify");

    // The client's connection drops without close_notify: the session's end says so.
    let tls = intercepted_client(front, &ca);
    tls.sock
        .shutdown(std::net::Shutdown::Both)
        .expect("drop the connection");
    drop(tls);

    let records = stop_and_read(imgate, &data);
    let xmpp: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "session_start" && r["protocol"] == "xmpp")
        .map(|r| &r["session"])
        .collect();
    let ends: Vec<&str> = xmpp
        .iter()
        .map(|session| {
            records
                .iter()
                .find(|r| r["type"] == "session_end" && &&r["session"] == session)
                .and_then(|r| r["reason"].as_str())
                .unwrap_or_else(|| panic!("{session} has ended: {records:?}"))
        })
        .collect();
    assert_eq!(ends[0], "closed", "{records:?}");
    assert_eq!(
        ends[1],
        "the client: the peer ended the connection without a TLS close_notify: what it sent \
         may have been truncated",
        "the dropped session is recorded as truncated"
    );
}

/// A firm's PKI: a root, and an interception CA below it whose key and certificate (followed
/// by the root's) go to `dir`. Gives the file holding the root alone, which clients trust.
fn firm_pki(dir: &Path) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let root_key = KeyPair::generate().expect("key");
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp Root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).expect("root");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Example Corp IM Inspection");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    let intermediate = params
        .signed_by(&key, &Issuer::new(root_params, root_key))
        .expect("intermediate");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("ca.pem"),
        format!("{}{}", intermediate.pem(), root.pem()),
    )
    .expect("ca.pem");
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).expect("ca.key");
    let trusted = dir.join("root.pem");
    std::fs::write(&trusted, root.pem()).expect("root.pem");
    trusted
}

#[test]
fn a_firms_own_interception_ca_below_its_root_works_with_real_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let firm_ca = dir.path().join("firm-ca");
    let root = firm_pki(&firm_ca);
    let data = dir.path().join("data-firm");
    let (imgate, front) = imgate_up(
        port,
        &data,
        &[
            "--extra-roots",
            &server_cert.to_string_lossy(),
            "--interception-ca",
            &firm_ca.to_string_lossy(),
        ],
    );
    // The clients trust the firm's root and nothing imgate generated.
    let received = clients(front, &root, &["chat"]);
    let records = stop_and_read(imgate, &data);
    check_inspected_chat(&received, &records);
    assert!(
        !data.join("ca").exists(),
        "no CA was generated beside the firm's"
    );
}

#[test]
fn message_text_policy_does_not_read_never_reaches_the_recipient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    let received = clients(front, &data.join("ca/ca.pem"), &["alternatives"]);
    let bob: Vec<&Value> = received["bob"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "chat")
        .collect();
    let raw: Vec<&str> = bob.iter().filter_map(|m| m["raw"].as_str()).collect();
    assert!(
        raw.iter().any(|r| r.contains("hello bob")),
        "the message itself is delivered: {received}"
    );
    assert!(
        raw.iter()
            .all(|r| !r.contains("falcon") && !r.contains("xhtml-im")),
        "its other-language body and its markup are not: {raw:?}"
    );
    let _ = stop_and_read(imgate, &data);
}

#[test]
fn a_client_that_says_nothing_is_not_relayed_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_trusting(port, &server_cert, &data);
    // Silent past the identification deadline: the server cannot tell what it is either, and
    // its port is not one an IM protocol is known at, so policy decides on `unknown`, which
    // the embedded policy blocks.
    let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
    peer.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut peer, &mut rest).expect("the session ends");
    assert!(rest.is_empty(), "nothing was relayed: {rest:?}");
    let records = stop_and_read(imgate, &data);
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start" && r["protocol"] == "unknown")
        .unwrap_or_else(|| panic!("no session of unknown protocol: {records:?}"));
    let end = records
        .iter()
        .find(|r| r["type"] == "session_end" && r["session"] == start["session"])
        .unwrap_or_else(|| panic!("the session has no end: {records:?}"));
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused by policy")),
        "{end}"
    );
}

#[test]
fn sessions_that_would_take_the_buffers_over_their_budget_end() {
    buffers_over_budget(
        &["--max-buffered", "1Mi"],
        "the dataplane's read buffers hold their limit",
    );
}

#[test]
fn sessions_that_would_take_one_address_over_its_share_of_the_buffers_end() {
    buffers_over_budget(
        &["--max-buffered", "1Gi", "--max-buffered-per-source", "1Mi"],
        "the read buffers of this client address's sessions hold their limit",
    );
}

/// Ten clients from one address each start a 200 KiB stanza through `imgate up` with
/// `options` (1 MiB allowed): some sessions end, for `reason`.
fn buffers_over_budget(options: &[&str], reason: &str) {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let certificate = server_cert.to_string_lossy();
    let mut args = vec!["--extra-roots", &certificate];
    args.extend(options);
    let (imgate, front) = common::imgate_up(port, &data, &args);
    // Ten clients each start a 200 KiB stanza and never finish it: 2 MB wanted, 1 MiB allowed.
    let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let mut clients: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut peer = TcpStream::connect(("127.0.0.1", front)).expect("connect");
            peer.write_all(header.as_bytes()).expect("header");
            let mut start = b"<message to='bob@localhost'><body>".to_vec();
            start.extend(std::iter::repeat_n(b'a', 200 << 10));
            peer.write_all(&start).expect("the start of a stanza");
            peer.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            peer
        })
        .collect();
    // Some are ended; the others wait for the rest of their stanza.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ended = 0;
    while ended == 0 {
        assert!(Instant::now() < deadline, "no session was ended");
        for peer in &mut clients {
            let mut chunk = [0u8; 4096];
            if matches!(peer.read(&mut chunk), Ok(0)) {
                ended += 1;
            }
        }
    }
    drop(clients);
    let records = stop_and_read(imgate, &data);
    assert!(
        records.iter().any(|r| r["type"] == "session_end"
            && r["reason"].as_str().is_some_and(|why| why.contains(reason))),
        "{records:?}"
    );
}
