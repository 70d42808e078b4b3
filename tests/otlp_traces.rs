//! OpenTelemetry traces from a dataplane, received by a real OTLP/HTTP receiver built on the
//! OpenTelemetry project's protobuf bindings (`tests/otlp_receiver.py`): with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, `imgate up` exports a span per session, with its
//! admission as a child span, named for the service and carrying what the session was (tenant,
//! front end, client, server, protocol, verdict), and a refused session is marked as such.
//! Conversations stay out of traces: no exported span or event holds a message's text. A
//! connection carried by `imgate connector` is traced at both ends, in one trace: the
//! dataplane's session is a child of the connector's span, whose context the stream header
//! carries. The operator exports a span per reconcile of a Tenant.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{example_tenant, kubeconfig, namespace, operator_with_env};
use common::tunnel::{enrolled, run_connector_with_env, wait_until_connected};
use common::xmpp::clients;
use common::{Killed, free_port, imgate_up_with_env, prosody, serve, stop_and_read};
use imgate_fake_api::FakeApi;
use serde_json::Value;

/// Starts the receiver on a free port, writing spans to `out`; returns it and its endpoint.
fn receiver(out: &Path) -> (Killed, String) {
    let port = free_port();
    let receiver = serve(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp_receiver.py"
            ))
            .arg(port.to_string())
            .arg(out),
        port,
        "the OTLP receiver (pip install opentelemetry-proto)",
    );
    (receiver, format!("http://127.0.0.1:{port}"))
}

/// The environment that has a component export its traces to `endpoint` within 200 ms.
fn exporting(endpoint: &str) -> [(&'static str, &str); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ]
}

/// The spans in `out` once at least `wanted` spans named `name` are there (or 30 s pass).
fn spans(out: &Path, name: &str, wanted: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Value> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON span"))
            .collect();
        let named = spans.iter().filter(|s| s["name"] == name).count();
        if named >= wanted || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sessions_are_exported_as_traces_without_their_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("spans.jsonl");
    let (_receiver, endpoint) = receiver(&out);
    let (_server, port, server_cert) = prosody(dir.path());
    let data = dir.path().join("data");
    let (imgate, front) = imgate_up_with_env(
        port,
        &data,
        &["--extra-roots", &server_cert.to_string_lossy()],
        &exporting(&endpoint),
    );
    let received = clients(front, &data.join("ca/ca.pem"), &["chat"]);
    assert!(
        received["bob"].to_string().contains("hello bob"),
        "the chat went through: {received}"
    );
    // A BitTorrent handshake, which the embedded policy refuses.
    let mut torrent = std::net::TcpStream::connect(("127.0.0.1", front)).expect("connect");
    std::io::Write::write_all(&mut torrent, b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0")
        .expect("write");
    let _ = std::io::Read::read(&mut torrent, &mut [0u8; 64]);
    drop(torrent);
    let records = stop_and_read(imgate, &data);

    let spans = spans(&out, "session", 3);
    let sessions: Vec<&Value> = spans.iter().filter(|s| s["name"] == "session").collect();
    let started: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "session_start")
        .collect();
    assert_eq!(
        sessions.len(),
        started.len(),
        "one span per archived session: {spans:?}"
    );
    for span in &sessions {
        assert_eq!(
            span["resource"]["service.name"], "imgate-dataplane",
            "{span}"
        );
        assert_eq!(span["attributes"]["imgate.tenant"], "local", "{span}");
        assert_eq!(span["attributes"]["imgate.frontend"], "forward", "{span}");
        assert_eq!(
            span["attributes"]["server.address"],
            format!("127.0.0.1:{port}"),
            "{span}"
        );
        let id = span["attributes"]["imgate.session"].as_str().expect("id");
        assert!(
            started.iter().any(|r| r["session"] == id),
            "the span names an archived session: {span}"
        );
        let admission = spans
            .iter()
            .find(|s| s["name"] == "admit" && s["parent_span_id"] == span["span_id"])
            .unwrap_or_else(|| panic!("no admission span under {span}"));
        assert_eq!(admission["trace_id"], span["trace_id"]);
    }
    let xmpp: Vec<&&Value> = sessions
        .iter()
        .filter(|s| s["attributes"]["imgate.protocol"] == "xmpp")
        .collect();
    assert_eq!(xmpp.len(), 2, "alice's and bob's sessions: {sessions:?}");
    assert!(
        xmpp.iter()
            .all(|s| s["attributes"]["imgate.action"] == "allow")
    );
    let torrent = sessions
        .iter()
        .find(|s| s["attributes"]["imgate.protocol"] == "bittorrent")
        .unwrap_or_else(|| panic!("no BitTorrent session: {sessions:?}"));
    assert_eq!(torrent["attributes"]["imgate.action"], "block", "{torrent}");
    let verdict = spans
        .iter()
        .filter(|s| s["name"] == "admit" && s["parent_span_id"] == torrent["span_id"])
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .find(|e| e["attributes"]["target"] == "imgate::session")
        .unwrap_or_else(|| panic!("no session log line under the admission: {spans:?}"));
    assert!(
        verdict["name"]
            .as_str()
            .is_some_and(|line| line.contains("bittorrent, block [local-defaults/protocols]")),
        "the session's log line, with the rule that refused it: {verdict}"
    );

    let exported = std::fs::read_to_string(&out).expect("spans");
    // Whole phrases: a bare "4111" turns up in random span ids and timestamps.
    for text in [
        "hello bob",
        "card 4111 1111",
        "project falcon",
        "falcon is go",
    ] {
        assert!(
            !exported.to_lowercase().contains(text),
            "message text {text:?} reached the traces"
        );
    }
}

#[test]
fn the_operator_exports_a_span_per_reconcile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("spans.jsonl");
    let (_receiver, endpoint) = receiver(&out);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let api = FakeApi::new();
    api.insert("tenants", example_tenant("acme"));
    let url = runtime.block_on(api.serve()).expect("a port");
    let config = kubeconfig(dir.path(), &url, &namespace("acme"));
    let _operator = operator_with_env(
        &config,
        &dir.path().join("operator.log"),
        &exporting(&endpoint),
    );
    let spans = spans(&out, "reconcile", 1);
    let reconcile = spans
        .iter()
        .find(|s| s["name"] == "reconcile")
        .unwrap_or_else(|| panic!("no reconcile span: {spans:?}"));
    assert_eq!(reconcile["resource"]["service.name"], "imgate-operator");
    assert_eq!(
        reconcile["attributes"]["imgate.tenant"], "acme",
        "{reconcile}"
    );
    assert_eq!(
        reconcile["attributes"]["imgate.deleting"], false,
        "{reconcile}"
    );
    assert_eq!(
        reconcile["parent_span_id"], "",
        "a reconcile starts a trace"
    );
}

#[test]
fn a_connection_through_a_connector_is_traced_at_both_ends() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("spans.jsonl");
    let (_receiver, endpoint) = receiver(&out);
    let env = exporting(&endpoint);
    // The server: echoes each connection's first read back.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let server_address = server.local_addr().expect("address");
    std::thread::spawn(move || {
        for mut peer in server.incoming().flatten() {
            let mut buffer = [0u8; 64];
            if let Ok(read) = peer.read(&mut buffer) {
                let _ = peer.write_all(&buffer[..read]);
            }
        }
    });
    let data = dir.path().join("data");
    let tunnel = format!("127.0.0.1:{}", free_port());
    // The echo server speaks no protocol imgate knows: a policy that lets it through.
    let (dataplane, _) = imgate_up_with_env(
        9,
        &data,
        &["--tunnel", &tunnel, "--policy", common::RELAY_UNIDENTIFIED],
        &env,
    );
    let identity = enrolled(
        dir.path(),
        &data,
        "site-1",
        &[tunnel.parse().expect("address")],
    );
    let connector = run_connector_with_env(
        &identity,
        &[&tunnel],
        &server_address.to_string(),
        &[],
        &env,
    );
    wait_until_connected(&connector);

    let mut client = std::net::TcpStream::connect(("127.0.0.1", connector.port)).expect("connect");
    let client_address = client.local_addr().expect("address");
    client.write_all(b"\x00\x01traced").expect("write");
    let mut back = [0u8; 8];
    client.read_exact(&mut back).expect("echoed");
    assert_eq!(&back, b"\x00\x01traced");
    drop(client);
    let carried = spans(&out, "carry", 2);
    drop(connector);
    stop_and_read(dataplane, &data);
    let spans = spans(&out, "session", 3);

    let carry = carried
        .iter()
        .find(|s| {
            s["name"] == "carry" && s["attributes"]["client.address"] == client_address.to_string()
        })
        .unwrap_or_else(|| panic!("no span from the connector for the client: {carried:?}"));
    assert_eq!(carry["resource"]["service.name"], "imgate-connector");
    assert_eq!(
        carry["attributes"]["server.address"],
        server_address.to_string()
    );
    assert_eq!(carry["attributes"]["imgate.dataplane"], tunnel, "{carry}");
    assert_eq!(carry["status"], 0, "carried: {carry}");
    // The start-up checks' connections to `imgate up`'s port-forward and to the connector's
    // make sessions too: the one to look at carries the client's bytes.
    let session = spans
        .iter()
        .find(|s| {
            s["name"] == "session"
                && s["attributes"]["client.address"] == client_address.to_string()
        })
        .unwrap_or_else(|| panic!("no span from the dataplane for the client: {spans:?}"));
    assert_eq!(session["resource"]["service.name"], "imgate-dataplane");
    assert_eq!(
        session["attributes"]["imgate.frontend"], "tunnel",
        "{session}"
    );
    assert_eq!(
        session["attributes"]["imgate.connector"], "site-1",
        "{session}"
    );
    assert_eq!(
        session["attributes"]["client.address"],
        client_address.to_string(),
        "the client the connector saw: {session}"
    );
    assert_eq!(session["attributes"]["imgate.action"], "allow", "{session}");
    assert_eq!(
        (&session["trace_id"], &session["parent_span_id"]),
        (&carry["trace_id"], &carry["span_id"]),
        "the dataplane's session is a child of the connector's span that carried it: {session}"
    );
    assert_eq!(session["links"], serde_json::json!([]), "{session}");
}
