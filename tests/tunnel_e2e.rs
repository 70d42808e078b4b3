//! A connection through the tunnel to a real server: a QUIC client enrolled with the
//! tenant's tunnel CA (as `imgate connector` does) opens a stream through `imgate up
//! --tunnel` to Prosody; the XMPP stream is relayed and inspected, and the session is
//! archived with the connector's id and the client's own address. A client enrolled with
//! another tenant's CA is refused. And `imgate connector`, enrolled with `request` and `sign`,
//! carries real clients' chat (slixmpp) through the tunnel, inspected and archived.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::xmpp::{check_inspected_chat, clients};
use common::{Killed, free_port, imgate_up, prosody, run, serve, stop_and_read};
use imgate_dataplane::tunnel::endpoint;
use imgate_dataplane::tunnel::header::{Decoded, Reply, Status, StreamHeader};
use imgate_dataplane::tunnel::trust::{
    TunnelCa, connector_config, connector_identity, connector_request,
};

/// A QUIC client for connector `id`, enrolled with `ca`, trusting the dataplanes of
/// `trusted`.
fn enrolled(ca: &TunnelCa, trusted: &TunnelCa, id: &str) -> quinn::Endpoint {
    let (key, request) = connector_request(id).expect("request");
    let certificate = ca.sign_connector(&request, id, 1).expect("signed");
    let identity = connector_identity(&key, certificate).expect("identity");
    let tls = connector_config(trusted.certificate(), identity).expect("TLS");
    let mut client =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    client.set_default_client_config(endpoint::client(tls).expect("QUIC"));
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

fn tenant_ca(data: &Path) -> TunnelCa {
    TunnelCa::load_or_generate(&data.join("tunnel"), "local").expect("the tenant's tunnel CA")
}

#[test]
fn a_connector_stream_reaches_the_server_inspected_and_archived_and_strangers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, server_port, server_cert) = prosody(dir.path());
    let data = dir.path().join("imgate");
    let tunnel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let (imgate, _front) = imgate_up(
        server_port,
        &data,
        &[
            "--tunnel",
            &tunnel.to_string(),
            "--extra-roots",
            &server_cert.to_string_lossy(),
        ],
    );
    let ca = tenant_ca(&data);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // QUIC endpoints run on the runtime they are made in.
    let _inside = runtime.enter();

    let connector = enrolled(&ca, &ca, "laptop-3");
    let (reply, answered) = runtime
        .block_on(xmpp_through(&connector, tunnel, server_port))
        .expect("through the tunnel");
    assert_eq!(reply.status, Status::Connected, "{reply:?}");
    assert!(
        answered.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "Prosody's features, offering STARTTLS, come back: {answered}"
    );

    let other = TunnelCa::generate("globex").expect("another tenant's CA");
    let stranger = enrolled(&other, &ca, "intruder");
    let refused = runtime
        .block_on(xmpp_through(&stranger, tunnel, server_port))
        .expect_err("another tenant's connector is refused");
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("certificate"),
        "{refused}"
    );
    runtime.block_on(connector.wait_idle());

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

/// `imgate connector` `id`, enrolled with the tunnel CA in `data` by `request` and `sign`,
/// forwarding a free port to `127.0.0.1:server_port` through the dataplane at `tunnel`;
/// returns it and the port.
fn connector(
    dir: &Path,
    data: &Path,
    id: &str,
    tunnel: SocketAddr,
    server_port: u16,
) -> (Killed, u16) {
    let identity = dir.join(format!("connector-{id}"));
    let imgate = || Command::new(env!("CARGO_BIN_EXE_imgate"));
    run(imgate()
        .args(["connector", "request", "--id", id, "--identity"])
        .arg(&identity));
    run(imgate()
        .args(["connector", "sign", "--id", id, "--identity"])
        .arg(&identity)
        .arg("--data")
        .arg(data));
    let front = free_port();
    let mut command = imgate();
    command
        .args([
            "connector",
            "run",
            "--id",
            id,
            "--socks",
            "off",
            "--identity",
        ])
        .arg(&identity)
        .args(["--dataplane", &tunnel.to_string(), "--forward"])
        .arg(format!("127.0.0.1:{front}=127.0.0.1:{server_port}"));
    (serve(&mut command, front, "imgate connector"), front)
}

#[test]
fn chat_through_imgate_connector_is_inspected_and_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, server_port, server_cert) = prosody(dir.path());
    let data = dir.path().join("imgate");
    let tunnel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let (imgate, _front) = imgate_up(
        server_port,
        &data,
        &[
            "--tunnel",
            &tunnel.to_string(),
            "--extra-roots",
            &server_cert.to_string_lossy(),
        ],
    );
    let (_connector, front) = connector(dir.path(), &data, "desk-1", tunnel, server_port);
    let received = clients(front, &data.join("ca/ca.pem"), &["chat"]);
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
