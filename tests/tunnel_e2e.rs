//! A connection through the tunnel to a real server: a QUIC client enrolled with the
//! tenant's tunnel CA (as `imgate connector` does) opens a stream through `imgate up
//! --tunnel` to Prosody; the XMPP stream is relayed and inspected, and the session is
//! archived with the connector's id and the client's own address. A client enrolled with
//! another tenant's CA is refused. `imgate connector`, enrolling with a one-time token as it
//! starts (and keeping that identity when restarted), dials the tunnel by name and carries
//! real clients' chat (slixmpp) through it, inspected and archived. A reused token, a
//! token pinning another CA, a revoked connector (its open connection too) and an expired
//! certificate are refused with a clear line in both logs; renewal works on the strength of
//! the current certificate; garbage datagrams on the tunnel port do no harm.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::tunnel::{enroll, mint_token, renew, run_connector, wait_until_connected};
use common::xmpp::{check_inspected_chat, clients};
use common::{Killed, free_port, http_get, imgate_up, prosody, stop_and_read, wait_for_line};
use imgate_dataplane::tunnel::endpoint;
use imgate_dataplane::tunnel::header::{Decoded, Reply, Status, StreamHeader};
use imgate_dataplane::tunnel::trust::{
    TunnelCa, connector_config, connector_identity, connector_request,
};

/// A QUIC client for connector `id`, enrolled with `ca`, trusting the dataplanes of
/// `trusted`.
fn quic_connector(ca: &TunnelCa, trusted: &TunnelCa, id: &str) -> quinn::Endpoint {
    let (key, request) = connector_request(id).expect("request");
    let certificate = ca.sign_connector(&request, id, 1).expect("signed");
    let identity = connector_identity(&key, certificate).expect("identity");
    let tls = connector_config(trusted.certificate(), identity).expect("TLS");
    let mut client = endpoint::bind(
        "127.0.0.1:0".parse().expect("address"),
        None,
        endpoint::MAX_DATAGRAM,
    )
    .expect("endpoint");
    client.set_default_client_config(endpoint::client(tls, endpoint::MAX_DATAGRAM).expect("QUIC"));
    client
}

/// Opens a stream to Prosody on `server_port` through the tunnel at `tunnel`, starts an XMPP
/// stream and returns the dataplane's reply and what the server answered.
async fn xmpp_through(
    client: &quinn::Endpoint,
    tunnel: SocketAddr,
    server_port: u16,
) -> Result<(Reply, String), String> {
    let connection = client
        .connect(tunnel, "localhost")
        .map_err(|e| format!("{e:?}"))?
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (mut send, mut receive) = connection.open_bi().await.map_err(|e| format!("{e:?}"))?;
    let header = StreamHeader {
        host: "127.0.0.1".into(),
        port: server_port,
        client: Some("192.0.2.7:51000".parse().expect("address")),
        connector: "laptop-3".into(),
        user: Some("alice".into()),
        trace: None,
    };
    send.write_all(&header.encode().expect("header"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    send.write_all(b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut received = Vec::new();
    let reply = loop {
        let mut chunk = [0u8; 4096];
        let Some(read) = receive
            .read(&mut chunk)
            .await
            .map_err(|e| format!("{e:?}"))?
        else {
            return Err(format!(
                "the stream ended: {}",
                String::from_utf8_lossy(&received)
            ));
        };
        received.extend_from_slice(&chunk[..read]);
        if let Ok(Decoded::Complete(reply, consumed)) = Reply::decode(&received)
            && (reply.status != Status::Connected
                || String::from_utf8_lossy(&received[consumed..]).contains("</stream:features>"))
        {
            received.drain(..consumed);
            break reply;
        }
    };
    connection.close(0u32.into(), b"done");
    Ok((reply, String::from_utf8_lossy(&received).into_owned()))
}

/// Prosody, and `imgate up` in front of it with a tunnel listener.
struct Setup {
    _prosody: Killed,
    server_port: u16,
    data: PathBuf,
    tunnel: SocketAddr,
    imgate: Killed,
}

fn setup(dir: &Path) -> Setup {
    setup_with(dir, &[])
}

/// [`setup`], `imgate up` given the `extra` options.
fn setup_with(dir: &Path, extra: &[&str]) -> Setup {
    let (prosody, server_port, server_cert) = prosody(dir);
    let data = dir.join("imgate");
    let tunnel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let (imgate, _front) = imgate_up(
        server_port,
        &data,
        &[
            &[
                "--tunnel",
                &tunnel.to_string(),
                "--extra-roots",
                &server_cert.to_string_lossy(),
            ],
            extra,
        ]
        .concat(),
    );
    Setup {
        _prosody: prosody,
        server_port,
        data,
        tunnel,
        imgate,
    }
}

fn tenant_ca(data: &Path) -> TunnelCa {
    TunnelCa::load_or_generate(&data.join("tunnel"), "local").expect("the tenant's tunnel CA")
}

#[test]
fn a_connector_stream_reaches_the_server_inspected_and_archived_and_strangers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Setup {
        _prosody,
        server_port,
        data,
        tunnel,
        imgate,
    } = setup(dir.path());
    let ca = tenant_ca(&data);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // QUIC endpoints run on the runtime they are made in.
    let _inside = runtime.enter();

    let connector = quic_connector(&ca, &ca, "laptop-3");
    let (reply, answered) = runtime
        .block_on(xmpp_through(&connector, tunnel, server_port))
        .expect("through the tunnel");
    assert_eq!(reply.status, Status::Connected, "{reply:?}");
    assert!(
        answered.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "Prosody's features, offering STARTTLS, come back: {answered}"
    );

    let other = TunnelCa::generate("globex").expect("another tenant's CA");
    let stranger = quic_connector(&other, &ca, "intruder");
    let refused = runtime
        .block_on(xmpp_through(&stranger, tunnel, server_port))
        .expect_err("another tenant's connector is refused");
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("certificate"),
        "{refused}"
    );
    runtime.block_on(connector.wait_idle());
    wait_for_line(
        &data.with_extension("log"),
        &[
            "a connector was refused",
            "invalid peer certificate: UnknownIssuer",
        ],
    );

    let records = stop_and_read(imgate, &data);
    let start = records
        .iter()
        .find(|r| r["type"] == "session_start" && r["connector"] == "laptop-3")
        .expect("the session is archived with its connector");
    assert_eq!(start["client"], "192.0.2.7:51000", "{start}");
    assert_eq!(start["protocol"], "xmpp", "{start}");
    assert_eq!(
        start["server"],
        format!("127.0.0.1:{server_port}"),
        "{start}"
    );
}

#[test]
fn chat_through_imgate_connector_is_inspected_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Setup {
        _prosody,
        server_port,
        data,
        tunnel,
        imgate,
    } = setup(dir.path());
    // The connector enrolls as it starts, dialling the tunnel by name, as a connector in a
    // cluster does with the token from its Secret.
    let identity = dir.path().join("connector-desk-1");
    let token = mint_token(&data, "desk-1");
    let by_name = [format!("localhost:{}", tunnel.port())];
    let server = format!("127.0.0.1:{server_port}");
    let first = run_connector(
        &identity,
        &by_name,
        &server,
        &["--enrollment-token", &token],
    );
    wait_until_connected(&first);
    let log = std::fs::read_to_string(&first.log).unwrap_or_default();
    assert!(log.contains("enrolled with the one-time token"), "{log}");
    drop(first);
    // Restarted with the same (now used) token, it keeps the identity it has.
    let connector = run_connector(
        &identity,
        &by_name,
        &server,
        &["--enrollment-token", &token],
    );
    let health = wait_until_connected(&connector);
    assert!(health.contains(&tunnel.to_string()), "{health}");
    let log = std::fs::read_to_string(&connector.log).unwrap_or_default();
    assert!(
        !log.contains("enrolled with the one-time token"),
        "no second enrollment: {log}"
    );
    let received = clients(connector.port, &data.join("ca/ca.pem"), &["chat"]);
    let metrics = http_get(connector.metrics, "/metrics");
    assert!(
        metrics.contains("imgate_connector_streams_total{outcome=\"connected\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "imgate_connector_datagram_bytes {}",
            endpoint::MAX_DATAGRAM
        )),
        "loopback carries the largest datagrams the tunnel sends, and the connector found it: {metrics}"
    );
    let records = stop_and_read(imgate, &data);
    check_inspected_chat(&received, &records);
    let starts: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["type"] == "session_start" && r["protocol"] == "xmpp")
        .collect();
    assert_eq!(
        starts.len(),
        2,
        "alice's and bob's XMPP sessions: {starts:?}"
    );
    for start in starts {
        assert_eq!(start["connector"], "desk-1", "{start}");
        assert!(
            start["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "the client's address as the connector saw it: {start}"
        );
    }
}

/// Sends a forwarded connection through `connector` and returns what came back until the
/// stream header was whole or the connection ended (the header may come in pieces): an XMPP
/// server's stream header when the tunnel carried it.
fn probe(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connector");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("<stream:stream") || !answer.ends_with(b">") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn tokens_renewal_revocation_and_expiry_are_enforced_with_clear_logs_and_garbage_does_no_harm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Setup {
        _prosody,
        server_port,
        data,
        tunnel,
        imgate,
    } = setup(dir.path());
    let up_log = data.with_extension("log");
    let server = format!("127.0.0.1:{server_port}");

    // A token enrolls once; its reuse is refused, and both sides say why.
    let token = mint_token(&data, "desk-1");
    let first = enroll(&token, &[tunnel], &dir.path().join("desk-1"));
    assert!(first.status.success(), "{first:?}");
    let again = enroll(&token, &[tunnel], &dir.path().join("desk-1-again"));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(
        said.contains("enrollment token for connector desk-1 was already used"),
        "{said}"
    );
    wait_for_line(&up_log, &["enrollment refused", "desk-1 was already used"]);

    // A token naming another CA: the connector will not talk to this dataplane.
    let token = mint_token(&data, "desk-2");
    let (rest, _pin) = token.rsplit_once('.').expect("a pin");
    let forged = format!("{rest}.{}", "ab".repeat(32));
    let refused = enroll(&forged, &[tunnel], &dir.path().join("desk-2"));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("the dataplane's tunnel CA is not the one the enrollment token names"),
        "{said}"
    );

    // Garbage on the UDP port does no harm.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP");
    for size in [1, 17, 1200, 1500] {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
            socket.send_to(&bytes, tunnel).expect("sent");
        }
    }

    // An enrolled connector is served.
    let connector = run_connector(&dir.path().join("desk-1"), &[tunnel], &server, &[]);
    wait_until_connected(&connector);
    let answer = probe(connector.port);
    assert!(
        answer.contains("stream:stream"),
        "Prosody answers: {answer}"
    );

    // Renewal opens in the last third of a certificate's life (30 days here): not now, and
    // the identity is left as it was.
    let identity = dir.path().join("desk-1");
    let before = std::fs::read(identity.join("cert.pem")).expect("cert");
    let renewed = renew(&identity, tunnel);
    let said = String::from_utf8_lossy(&renewed.stderr);
    assert!(!renewed.status.success());
    assert!(
        said.contains("connector desk-1 may renew from")
            && said.contains("the last third of its certificate's life"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(identity.join("cert.pem")).expect("cert"),
        before
    );
    wait_for_line(&up_log, &["enrollment refused", "desk-1 may renew from"]);

    // Revoked: its open connection closes, and it is not served again.
    let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["tunnel", "revoke", "--connector", "desk-1", "--data"])
        .arg(&data)
        .output()
        .expect("imgate tunnel revoke runs");
    assert!(revoke.status.success(), "{revoke:?}");
    wait_for_line(
        &up_log,
        &["closing a revoked connector's connection", "desk-1"],
    );
    wait_for_line(
        &connector.log,
        &["lost the dataplane", "connector desk-1 is revoked"],
    );
    wait_for_line(
        &up_log,
        &["a connector was refused: connector desk-1 is revoked"],
    );
    assert_eq!(
        probe(connector.port),
        "",
        "a revoked connector carries nothing"
    );

    // Expired: a certificate signed for no days at all.
    let old = dir.path().join("old-1");
    let imgate_cli = || std::process::Command::new(env!("CARGO_BIN_EXE_imgate"));
    common::run(
        imgate_cli()
            .args(["connector", "request", "--id", "old-1", "--identity"])
            .arg(&old),
    );
    common::run(
        imgate_cli()
            .args([
                "tunnel",
                "sign",
                "--connector",
                "old-1",
                "--days",
                "0",
                "--identity",
            ])
            .arg(&old)
            .arg("--data")
            .arg(&data),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let expired = run_connector(&old, &[tunnel], &server, &[]);
    wait_for_line(
        &expired.log,
        &["the certificate expired at", "enroll again"],
    );
    wait_for_line(
        &expired.log,
        &[
            "lost the dataplane",
            "invalid peer certificate: certificate expired",
        ],
    );
    wait_for_line(
        &up_log,
        &[
            "a connector was refused",
            "invalid peer certificate: certificate expired",
        ],
    );
    drop(expired);

    let records = stop_and_read(imgate, &data);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "session_start" && r["connector"] == "desk-1"),
        "the session before the revocation was archived"
    );
}

#[test]
fn a_stolen_connector_certificate_stops_working_once_the_real_connector_renews() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Certificates of 20 minutes are in their last third from the start (they begin an hour
    // back, for clocks behind); no grace for the replaced one.
    let Setup {
        _prosody,
        server_port,
        data,
        tunnel,
        imgate,
    } = setup_with(
        dir.path(),
        &["--connector-lifetime", "20m", "--renewal-grace", "0s"],
    );
    let up_log = data.with_extension("log");
    let server = format!("127.0.0.1:{server_port}");

    let identity = dir.path().join("desk-7");
    let enrolled = enroll(&mint_token(&data, "desk-7"), &[tunnel], &identity);
    assert!(enrolled.status.success(), "{enrolled:?}");
    // Someone copies the connector's key and certificate.
    let stolen = dir.path().join("stolen");
    std::fs::create_dir_all(&stolen).expect("dir");
    for file in ["ca.pem", "key.pem", "cert.pem"] {
        std::fs::copy(identity.join(file), stolen.join(file)).expect("copy");
    }

    // The real connector renews: a new key and certificate, signed on the strength of the
    // current one.
    let key_before = std::fs::read(identity.join("key.pem")).expect("key");
    let renewed = renew(&identity, tunnel);
    assert!(renewed.status.success(), "{renewed:?}");
    assert_ne!(
        std::fs::read(identity.join("key.pem")).expect("key"),
        key_before
    );
    wait_for_line(&up_log, &["connector renewed its certificate", "desk-7"]);

    // The copy is refused, on both sides, and cannot renew either.
    let thief = run_connector(&stolen, &[tunnel], &server, &[]);
    wait_for_line(
        &up_log,
        &[
            "a connector was refused",
            "connector desk-7 presented a certificate that a newer one replaced",
        ],
    );
    wait_for_line(&thief.log, &["lost the dataplane", "a newer one replaced"]);
    assert_eq!(probe(thief.port), "", "the copy carries nothing");
    drop(thief);
    let renewed = renew(&stolen, tunnel);
    assert!(!renewed.status.success());
    let said = String::from_utf8_lossy(&renewed.stderr);
    assert!(said.contains("a newer one replaced"), "{said}");

    // The real connector is served. Its certificate is due at once, so it renews on start;
    // with no grace, the dataplane then closes the connections the previous certificate
    // made, and the connector makes new ones with the new certificate.
    let connector = run_connector(&identity, &[tunnel], &server, &[]);
    wait_for_line(&connector.log, &["certificate renewed, valid until"]);
    wait_until_connected(&connector);
    // A connection the previous certificate made may still look usable for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut answer = probe(connector.port);
    while !answer.contains("stream:stream") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        answer = probe(connector.port);
    }
    assert!(
        answer.contains("stream:stream"),
        "the renewed connector carries its sessions: {answer:?}\n--- connector ---\n{}\n--- imgate ---\n{}",
        std::fs::read_to_string(&connector.log).unwrap_or_default(),
        std::fs::read_to_string(&up_log).unwrap_or_default()
    );
    drop(connector);

    // An open connection whose certificate is replaced (here by offline signing, which
    // counts as the connector's newest certificate too) is closed.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ca = tenant_ca(&data);
    let open = runtime.block_on(async {
        quic_connector(&ca, &ca, "desk-8")
            .connect(tunnel, "localhost")
            .expect("connect")
            .await
            .expect("served before its replacement")
    });
    let offline = dir.path().join("desk-8");
    let imgate_cli = || std::process::Command::new(env!("CARGO_BIN_EXE_imgate"));
    common::run(
        imgate_cli()
            .args(["connector", "request", "--id", "desk-8", "--identity"])
            .arg(&offline),
    );
    common::run(
        imgate_cli()
            .args(["tunnel", "sign", "--connector", "desk-8", "--identity"])
            .arg(&offline)
            .arg("--data")
            .arg(&data),
    );
    let closed = runtime.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(60), open.closed())
            .await
            .expect("the replaced certificate's connection is closed")
    });
    assert!(
        closed.to_string().contains("a newer one replaced"),
        "{closed}"
    );
    drop(imgate);
}

#[test]
fn enrollment_connections_are_capped_per_address_and_end_at_their_deadline() {
    use imgate_dataplane::tunnel::listener::{ENROLL_DEADLINE, MAX_ENROLLING_PER_SOURCE};
    use imgate_dataplane::tunnel::{tokens, trust};
    let dir = tempfile::tempdir().expect("tempdir");
    let Setup {
        _prosody,
        data,
        tunnel,
        imgate,
        ..
    } = setup(dir.path());
    let pin = tokens::ca_pin(tenant_ca(&data).certificate());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ends: Vec<String> = runtime.block_on(async {
        let client = endpoint::bind(
            "127.0.0.1:0".parse().expect("address"),
            None,
            endpoint::MAX_DATAGRAM,
        )
        .expect("endpoint");
        let config = endpoint::client(
            trust::enrollment_config(&pin).expect("TLS"),
            endpoint::MAX_DATAGRAM,
        )
        .expect("QUIC");
        // One more enrollment connection than an address may hold, none of them asking
        // for anything.
        let mut connections = Vec::new();
        for _ in 0..=MAX_ENROLLING_PER_SOURCE {
            let connecting = client
                .connect_with(config.clone(), tunnel, "localhost")
                .expect("connect");
            connections.push(connecting.await.expect("handshake"));
        }
        let mut ends = Vec::new();
        for connection in &connections {
            let ended = tokio::time::timeout(ENROLL_DEADLINE * 4, connection.closed())
                .await
                .expect("every enrollment connection ends");
            ends.push(ended.to_string());
        }
        ends
    });
    let refused = ends
        .iter()
        .filter(|end| end.contains("enrollments are already under way from this address"))
        .count();
    let late = ends
        .iter()
        .filter(|end| end.contains("the enrollment did not finish within 30 s"))
        .count();
    assert_eq!(
        (refused, late),
        (1, MAX_ENROLLING_PER_SOURCE),
        "one over the cap is refused, the others end at the deadline: {ends:?}"
    );
    drop(imgate);
}
