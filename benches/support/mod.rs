//! What the dataplane benchmarks share: an XMPP client that logs in through a relay, and the
//! relays to compare (HAProxy as a plain TCP relay, `imgate up` in front of Prosody).

#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
pub mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use base64::Engine;
use common::{Killed, free_port};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// The interception CA of the `imgate up` whose data folder is `data`.
pub fn imgate_roots(data: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(data.join("ca/ca.pem"))
        .expect("pem")
        .filter_map(Result::ok)
        .collect()
}

/// Pins every thread of process `pid` to `cpus` (a `taskset` list such as `1` or `0-1`);
/// threads it starts later inherit the pinning. Returns whether it worked.
pub fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time process `pid` has used, user and system, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // After the command name, which may hold spaces: fields 3 onwards; utime and stime are
    // fields 14 and 15, in ticks of 1/100 s on Linux.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .expect("/proc stat fields");
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("ticks");
    (ticks(14) + ticks(15)) as f64 / 100.0
}

pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(
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

/// Logs alice in through `port` with `resource`, trusting `roots`; returns the stream and
/// the bound JID.
pub async fn login(
    port: u16,
    roots: &[CertificateDer<'static>],
    resource: &str,
) -> (TlsStream<TcpStream>, String) {
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
    // As imgate trusts what --extra-roots gives: a CA's certificate as a root, a server's own
    // self-signed certificate (which openssl makes a CA) as exactly that server's.
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        let _ = store.add(root.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = imgate_dataplane::proxy::upstream_verifier::UpstreamVerifier::new(
        store,
        roots.to_vec(),
        &provider,
    )
    .expect("verifier");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
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
    tls.write_all(format!("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>").as_bytes()).await.expect("write");
    let text = read_until(&mut tls, &mut buffer, "</iq>").await;
    let start = text.find("<jid>").expect("bound JID") + 5;
    let jid = text[start..start + text[start..].find("</jid>").expect("jid end")].to_owned();
    (tls, jid)
}

/// Starts HAProxy as a plain TCP relay to `upstream`, accepting up to `maxconn` connections.
pub fn haproxy(dir: &Path, upstream: u16, maxconn: usize) -> (Killed, u16) {
    let port = free_port();
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, format!("global\n  maxconn {maxconn}\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n  server s 127.0.0.1:{upstream}\n")).expect("config");
    let relay = common::serve(
        Command::new("haproxy").arg("-db").arg("-f").arg(&config),
        port,
        "haproxy (apt-get install haproxy)",
    );
    (relay, port)
}

/// Starts `imgate up` (named `name`, with `extra` options) forwarding to Prosody, with no
/// metrics endpoint unless `extra` names one, and segments sealed every 20 s; returns it, its
/// port and its data folder.
pub fn imgate(
    dir: &Path,
    name: &str,
    extra: &[&str],
    prosody_port: u16,
    server_cert: &Path,
) -> (Killed, u16, std::path::PathBuf) {
    let data = dir.join(format!("imgate-{name}"));
    let cert = server_cert.to_string_lossy();
    // Every client is on loopback: one address for all the sessions a bench opens.
    let mut options = vec![
        "--seal-seconds",
        "20",
        "--extra-roots",
        &cert,
        "--max-connections-per-source",
        "1000000",
    ];
    if !extra.contains(&"--metrics") {
        options.extend_from_slice(&["--metrics", "off"]);
    }
    options.extend_from_slice(extra);
    let (imgate, front) = common::imgate_up(prosody_port, &data, &options);
    (imgate, front, data)
}

/// Raises this process's open-file limit (children inherit it); returns the limit in force.
pub fn raise_file_limit(wanted: u64) -> u64 {
    let raised = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={wanted}:{wanted}"))
        .status()
        .is_ok_and(|s| s.success());
    if !raised {
        println!("could not raise the open-file limit to {wanted} (needs root and prlimit)");
    }
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
