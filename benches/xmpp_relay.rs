//! XMPP message throughput and added latency, side by side in one run: a client talking to
//! Prosody directly, through HAProxy as a plain TCP relay, and through `imgate up` with the
//! embedded policy (every message inspected and archived, fail-closed, in both directions),
//! once forwarding when a record is written to the log and once when it is fsynced.
//! The client logs in (STARTTLS, SASL PLAIN, bind) and sends chat messages to its own full
//! JID, so each message crosses the relay twice.
//! Run: `cargo bench --bench xmpp_relay` (needs prosody, haproxy and openssl installed).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Killed, free_port, prosody, wait_for_port};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
const MESSAGES: usize = 20_000;
/// Messages per second of the light-load latency run.
const LIGHT_RATE: f64 = 500.0;

async fn read_until<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    needle: &str,
) -> String {
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(buffer).into_owned();
        if let Some(at) = text.find(needle) {
            let end = text[at..].find('>').map_or(text.len(), |e| at + e + 1);
            buffer.drain(..end.min(buffer.len()));
            return text;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "the server closed while waiting for {needle}: {text}"
        );
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Logs alice in through `port`, trusting `roots`; returns the stream and the bound JID.
async fn login(port: u16, roots: &[CertificateDer<'static>]) -> (TlsStream<TcpStream>, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buffer = Vec::new();
    tcp.write_all(HEADER).await.expect("write");
    read_until(&mut tcp, &mut buffer, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .expect("write");
    read_until(&mut tcp, &mut buffer, "<proceed").await;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let mut buffer = Vec::new();
    tls.write_all(HEADER).await.expect("write");
    read_until(&mut tls, &mut buffer, "</stream:features>").await;
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0alicepw");
    tls.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
            .as_bytes(),
    )
    .await
    .expect("write");
    read_until(&mut tls, &mut buffer, "<success").await;
    tls.write_all(HEADER).await.expect("write");
    read_until(&mut tls, &mut buffer, "</stream:features>").await;
    tls.write_all(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>").await.expect("write");
    let text = read_until(&mut tls, &mut buffer, "</iq>").await;
    let start = text.find("<jid>").expect("bound JID") + 5;
    let jid = text[start..start + text[start..].find("</jid>").expect("jid end")].to_owned();
    (tls, jid)
}

/// Sends `count` messages to the own JID, at most `rate` per second (0: as fast as
/// possible); returns messages per second and the latencies.
async fn run(
    port: u16,
    roots: &[CertificateDer<'static>],
    count: usize,
    rate: f64,
) -> (f64, Vec<Duration>) {
    let (tls, jid) = login(port, roots).await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for i in 0..count {
            if rate > 0.0 {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let sent = start.elapsed().as_nanos();
            let message = format!(
                "<message to='{jid}' type='chat'><body>t{sent:020} quarterly numbers look fine, call me later</body></message>"
            );
            writer.write_all(message.as_bytes()).await.expect("send");
        }
        writer
    });
    let mut latencies = Vec::with_capacity(count);
    let mut pending = String::new();
    let mut chunk = vec![0u8; 65536];
    while latencies.len() < count {
        let n = reader.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "the stream closed after {} messages",
            latencies.len()
        );
        pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
        while let Some(at) = pending.find("<body>t") {
            let Some(stamp) = pending.get(at + 7..at + 27) else {
                break;
            };
            if let Ok(sent) = stamp.parse::<u128>() {
                latencies.push(
                    start
                        .elapsed()
                        .saturating_sub(Duration::from_nanos(sent as u64)),
                );
            }
            pending.drain(..at + 27);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(sender.await);
    (count as f64 / elapsed, latencies)
}

/// Runs each path for 5 s at `rate` messages per second and prints the latencies.
fn latency(
    runtime: &tokio::runtime::Runtime,
    paths: &[(&str, u16, &Vec<CertificateDer<'static>>)],
    rate: f64,
    what: &str,
) {
    println!("latency at {rate:.0} messages/s ({what}), 5 s each:");
    let mut p99 = Vec::new();
    for (name, port, roots) in paths {
        let (_, mut latencies) = runtime.block_on(run(*port, roots, (rate * 5.0) as usize, rate));
        let (p50, tail) = (
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99),
        );
        println!(
            "  {name:<40} p50 {:>7.3} ms  p99 {:>7.3} ms",
            p50.as_secs_f64() * 1e3,
            tail.as_secs_f64() * 1e3
        );
        p99.push(tail);
    }
    println!(
        "  p99 added over direct: by HAProxy {:.3} ms; by imgate {:.3} ms ({:.3} ms forwarding after fsync)",
        p99[1].saturating_sub(p99[0]).as_secs_f64() * 1e3,
        p99[2].saturating_sub(p99[0]).as_secs_f64() * 1e3,
        p99[3].saturating_sub(p99[0]).as_secs_f64() * 1e3
    );
}

fn percentile(latencies: &mut [Duration], q: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
}

fn haproxy(dir: &Path, upstream: u16) -> (Killed, u16) {
    let port = free_port();
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, format!("global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s 127.0.0.1:{upstream}\n")).expect("config");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy runs (apt-get install haproxy)");
    let relay = Killed(child);
    wait_for_port(port, "haproxy");
    (relay, port)
}

/// Starts `imgate up` forwarding to Prosody, forwarding messages once their records are
/// `forward_after` (written or synced); returns it, its port and its data folder.
fn imgate(
    dir: &Path,
    forward_after: &str,
    prosody_port: u16,
    server_cert: &Path,
) -> (Killed, u16, std::path::PathBuf) {
    let front = free_port();
    let data = dir.join(format!("imgate-{forward_after}"));
    let child = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args([
            "up",
            "--socks",
            "off",
            "--http",
            "off",
            "--metrics",
            "off",
            "--forward-after",
            forward_after,
            "--forward",
            &format!("127.0.0.1:{front}=127.0.0.1:{prosody_port}"),
            "--extra-roots",
        ])
        .arg(server_cert)
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("imgate up runs");
    let imgate = Killed(child);
    wait_for_port(front, "imgate up");
    (imgate, front, data)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("xmpp_relay: bench");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, prosody_port, server_cert) = prosody(dir.path());
    let (_haproxy, haproxy_port) = haproxy(dir.path(), prosody_port);
    let (_imgate, front, data) = imgate(dir.path(), "written", prosody_port, &server_cert);
    let (_synced, synced_front, synced_data) =
        imgate(dir.path(), "synced", prosody_port, &server_cert);
    let server_roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server_cert)
        .expect("pem")
        .filter_map(Result::ok)
        .collect();
    let ca = |data: &Path| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(data.join("ca/ca.pem"))
            .expect("pem")
            .filter_map(Result::ok)
            .collect()
    };
    let (imgate_roots, synced_roots) = (ca(&data), ca(&synced_data));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let paths = [
        ("direct to Prosody", prosody_port, &server_roots),
        ("through HAProxy (TCP relay)", haproxy_port, &server_roots),
        ("through imgate (policy + archive)", front, &imgate_roots),
        (
            "through imgate, forwarding after fsync",
            synced_front,
            &synced_roots,
        ),
    ];
    println!("XMPP, {MESSAGES} messages to the own JID (each crosses the relay twice):");
    let mut rates = Vec::new();
    for (name, port, roots) in paths {
        let (rate, _) = runtime.block_on(run(port, roots, MESSAGES, 0.0));
        println!("  {name:<40} {rate:>9.0} messages/s");
        rates.push(rate);
    }
    println!(
        "  imgate / HAProxy: {:.2} ({:.2} forwarding after fsync)",
        rates[2] / rates[1],
        rates[3] / rates[1]
    );
    let half = rates[2].min(rates[1]) / 2.0;
    for (rate, what) in [
        (half, "half of the slower relay's rate"),
        (LIGHT_RATE, "light load"),
    ] {
        latency(&runtime, &paths, rate, what);
    }
}
