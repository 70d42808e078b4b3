use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::tunnel::endpoint;
use crate::tunnel::header::{Decoded, Reply, Status, StreamHeader};

pub(in crate::tunnel) const DIALLED: &str = "tunnel.acme.example";

/// A dataplane of `ca`'s tenant listening on loopback.
pub(in crate::tunnel) fn dataplane(ca: &TunnelCa) -> quinn::Endpoint {
    let identity = ca
        .issue_dataplane(&[DIALLED.to_owned()], Duration::from_secs(86_400))
        .expect("server certificate");
    let tls = dataplane_config(ca.certificate(), identity).expect("server TLS");
    let config = endpoint::server(tls).expect("QUIC server");
    endpoint::bind(
        "127.0.0.1:0".parse().expect("address"),
        Some(config),
        endpoint::MAX_DATAGRAM,
    )
    .expect("endpoint")
}

/// A connector enrolled with `signer` (its key made here, only the request signed there),
/// trusting dataplanes of `trusted`.
pub(in crate::tunnel) fn connector(
    signer: &TunnelCa,
    trusted: &TunnelCa,
    id: &str,
) -> quinn::Endpoint {
    connector_with(signer, trusted, id, endpoint::MAX_DATAGRAM)
}

/// [`connector`] with its datagrams held to `max_datagram` bytes.
pub(in crate::tunnel) fn connector_with(
    signer: &TunnelCa,
    trusted: &TunnelCa,
    id: &str,
    max_datagram: u16,
) -> quinn::Endpoint {
    let (key, request) = connector_request(id).expect("request");
    let cert = signer.sign_connector(&request, id, 30).expect("signed");
    let identity = connector_identity(&key, cert).expect("identity");
    let tls = connector_config(trusted.certificate(), identity).expect("client TLS");
    let mut endpoint = endpoint::bind("127.0.0.1:0".parse().expect("address"), None, max_datagram)
        .expect("endpoint");
    endpoint.set_default_client_config(endpoint::client(tls, max_datagram).expect("QUIC client"));
    endpoint
}

/// Serves one connection: checks who the connector is, reads a stream header, answers and
/// echoes the payload. Returns the connector's tenant and id as its certificate names them.
/// The endpoint lives until its connections are closed, so that a refusal reaches the peer.
async fn serve_one(endpoint: quinn::Endpoint) -> Result<(String, String), String> {
    let served = serve(&endpoint).await;
    endpoint.wait_idle().await;
    served
}

async fn serve(endpoint: &quinn::Endpoint) -> Result<(String, String), String> {
    let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
    let connection = incoming.await.map_err(|e| e.to_string())?;
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no client certificate")?;
    let who = connector_of(&certificates[0]).ok_or("no connector id in the certificate")?;
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
    let mut buffer = Vec::new();
    let header = loop {
        let mut chunk = [0u8; 512];
        let read = recv.read(&mut chunk).await.map_err(|e| e.to_string())?;
        buffer.extend_from_slice(&chunk[..read.ok_or("stream ended")?]);
        match StreamHeader::decode(&buffer).map_err(|e| e.to_string())? {
            Decoded::Complete(header, consumed) => {
                buffer.drain(..consumed);
                break header;
            }
            Decoded::NeedMore(_) => continue,
        }
    };
    assert_eq!(
        header.connector, who.1,
        "the header names the same connector"
    );
    let reply = Reply {
        status: Status::Connected,
        reason: format!("{}:{}", header.host, header.port),
    };
    send.write_all(&reply.encode())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(&buffer).await.map_err(|e| e.to_string())?;
    let rest = recv.read_to_end(1 << 16).await.map_err(|e| e.to_string())?;
    send.write_all(&rest).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    connection.closed().await;
    Ok(who)
}

pub(in crate::tunnel) async fn dial(
    endpoint: &quinn::Endpoint,
    at: SocketAddr,
) -> Result<quinn::Connection, String> {
    endpoint
        .connect(at, DIALLED)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_enrolled_connector_carries_a_stream_and_is_known_by_its_certificate() {
    let acme = TunnelCa::generate("acme").expect("CA");
    let server = dataplane(&acme);
    let at = server.local_addr().expect("address");
    let serving = tokio::spawn(serve_one(server));

    let client = connector(&acme, &acme, "laptop-3");
    let connection = dial(&client, at).await.expect("connected");
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let header = StreamHeader {
        host: "chat.example".into(),
        port: 5222,
        client: Some("192.0.2.7:51000".parse().expect("address")),
        connector: "laptop-3".into(),
        user: None,
        trace: None,
    };
    send.write_all(&header.encode().expect("header"))
        .await
        .expect("send");
    send.write_all(b"<stream:stream>").await.expect("send");
    send.finish().expect("finish");
    let answer = recv.read_to_end(1 << 16).await.expect("answer");
    let Ok(Decoded::Complete(reply, consumed)) = Reply::decode(&answer) else {
        panic!("a reply comes first: {answer:?}");
    };
    assert_eq!(reply.status, Status::Connected);
    assert_eq!(reply.reason, "chat.example:5222");
    assert_eq!(
        &answer[consumed..],
        b"<stream:stream>",
        "the payload is echoed"
    );
    connection.close(0u32.into(), b"done");

    let who = serving.await.expect("join").expect("served");
    assert_eq!(who, ("acme".to_owned(), "laptop-3".to_owned()));
}

#[tokio::test]
async fn another_tenants_connector_and_another_tenants_dataplane_are_refused() {
    let (acme, globex) = (
        TunnelCa::generate("acme").expect("CA"),
        TunnelCa::generate("globex").expect("CA"),
    );
    let server = dataplane(&acme);
    let at = server.local_addr().expect("address");
    let serving = tokio::spawn(serve_one(server));

    // Signed by another tenant's CA: acme's dataplane refuses it.
    let stranger = connector(&globex, &acme, "intruder");
    let refused = match dial(&stranger, at).await {
        // In TLS 1.3 the client finishes first; the refusal arrives as the connection closes.
        Ok(connection) => connection.closed().await.to_string(),
        Err(error) => error,
    };
    assert!(
        refused.contains("certificate") || refused.contains("alert"),
        "refused with a TLS alert: {refused}"
    );
    let served = serving.await.expect("join");
    assert!(served.is_err(), "the dataplane never serves it: {served:?}");

    // A connector of globex dialling acme's dataplane does not trust it.
    let server = dataplane(&acme);
    let at = server.local_addr().expect("address");
    let serving = tokio::spawn(serve_one(server));
    let lost = connector(&globex, &globex, "lost");
    let error = dial(&lost, at)
        .await
        .expect_err("the dataplane is not trusted");
    assert!(error.contains("certificate"), "{error}");
    let served = serving.await.expect("join");
    assert!(
        served.is_err(),
        "the connector never gets a stream: {served:?}"
    );
}
