//! Renewal of the dataplane's certificate over real QUIC handshakes on loopback.

use rustls_pki_types::CertificateDer;

use super::*;
use crate::tunnel::trust::tests::{DIALLED, connector, dial};

/// Accepts connections and echoes every stream of them, until the endpoint closes.
async fn echo(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let Ok(bytes) = recv.read_to_end(1 << 16).await else {
                    return;
                };
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
            }
        });
    }
}

/// The certificate `connection`'s dataplane presented.
fn presented(connection: &quinn::Connection) -> CertificateDer<'static> {
    let chain = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("the dataplane presents a certificate");
    chain[0].clone()
}

/// The end of `certificate`'s validity (Unix seconds).
fn not_after(certificate: &CertificateDer<'_>) -> i64 {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).expect("X.509");
    parsed.validity().not_after.timestamp()
}

async fn round_trip(connection: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(payload).await.expect("send");
    send.finish().expect("finish");
    recv.read_to_end(1 << 16).await.expect("echo")
}

#[tokio::test]
async fn a_new_certificate_is_presented_before_the_old_one_expires_and_open_connections_carry_on() {
    let ca = Arc::new(TunnelCa::generate("acme").expect("CA"));
    let certificate = ServerCertificate::new(&[DIALLED.to_owned()], Duration::from_secs(6));
    let (config, issued) = certificate.issue(&ca).expect("issued");
    let server =
        quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("address")).expect("endpoint");
    let at = server.local_addr().expect("address");
    let renewing = tokio::spawn(keep_renewed(
        server.clone(),
        ca.clone(),
        certificate,
        issued,
    ));
    let serving = tokio::spawn(echo(server.clone()));

    let client = connector(&ca, &ca, "laptop-3");
    let first = dial(&client, at).await.expect("connected");
    let old = presented(&first);
    let renewed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let connection = dial(&client, at)
                .await
                .expect("every handshake verifies against the tenant's CA");
            let now = presented(&connection);
            if now != old {
                break (connection, now);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (second, new) = renewed.expect("a new certificate is presented before the old one expires");
    assert!(
        not_after(&new) > not_after(&old),
        "the new certificate runs longer"
    );
    assert_eq!(round_trip(&second, b"new").await, b"new");
    assert_eq!(
        round_trip(&first, b"old").await,
        b"old",
        "the connection made under the old certificate carries on"
    );
    renewing.abort();
    serving.abort();
}
