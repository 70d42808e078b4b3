//! Memory per idle session, side by side in one run: 10,000 XMPP clients log in to Prosody
//! (STARTTLS, SASL PLAIN, bind) through HAProxy as a plain TCP relay, through `imgate up` with
//! the embedded policy but TLS passed through, and through `imgate up` with the embedded
//! policy (TLS intercepted on both sides, every stanza read), and stay idle; the relay's
//! resident memory is read before and after, and the difference is divided by the number of
//! sessions.
//! Run: `cargo bench --bench idle_sessions` (needs prosody, haproxy, openssl and prlimit;
//! `IDLE_SESSIONS=N` for another count). The file-descriptor limit is raised for the run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::common::prosody;
use support::{haproxy, imgate, imgate_roots, login, rss_kib};
use tokio::task::JoinSet;

const DEFAULT_SESSIONS: usize = 10_000;
/// Logins in flight at once.
const CONCURRENCY: usize = 32;

/// Opens `count` logged-in sessions through `port` and returns them, to be held idle.
async fn open_sessions(
    port: u16,
    roots: Arc<Vec<CertificateDer<'static>>>,
    count: usize,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut sessions = Vec::with_capacity(count);
    let mut pending = JoinSet::new();
    for i in 0..count {
        if pending.len() >= CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            sessions.push(done.expect("login"));
        }
        let roots = roots.clone();
        pending.spawn(async move { login(port, &roots, &format!("idle{i}")).await.0 });
        if (i + 1) % 2000 == 0 {
            println!("    {} sessions", i + 1);
        }
    }
    while let Some(done) = pending.join_next().await {
        sessions.push(done.expect("login"));
    }
    sessions
}

/// Resident memory of `pid` before and after `count` idle sessions through `port`; prints
/// and returns KiB per session.
fn measure(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    pid: u32,
    port: u16,
    roots: Vec<CertificateDer<'static>>,
    count: usize,
) -> f64 {
    let roots = Arc::new(roots);
    // One session first, so that what every session shares (TLS configurations, a minted
    // leaf, the policy's first evaluation) is not counted.
    drop(runtime.block_on(open_sessions(port, roots.clone(), 1)));
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    let sessions = runtime.block_on(open_sessions(port, roots, count));
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "  {name:<40} {before:>8} KiB idle, {after:>8} KiB with {count} sessions: {per:.2} KiB per session"
    );
    drop(sessions);
    per
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("idle_sessions: bench");
        return;
    }
    let wanted: usize = std::env::var("IDLE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SESSIONS);
    let limit = support::raise_file_limit(4 * wanted as u64 + 1024);
    // imgate holds two descriptors a session; leave room for everything else.
    let count = wanted.min((limit as usize).saturating_sub(1024) / 2);
    if count < wanted {
        println!("only {count} sessions fit the open-file limit of {limit}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, prosody_port, server_cert) = prosody(dir.path());
    let (haproxy, haproxy_port) = haproxy(dir.path(), prosody_port, count + 100);
    let (imgate_up, imgate_port, data) =
        imgate(dir.path(), "intercept", &[], prosody_port, &server_cert);
    // The same policy with TLS passed through: what imgate's own session costs without two
    // TLS connections.
    let policy = dir.path().join("passthrough.yaml");
    std::fs::write(
        &policy,
        include_str!("../src/default-policy.yaml").replace("tls: intercept", "tls: passthrough"),
    )
    .expect("policy");
    let policy = policy.to_string_lossy().into_owned();
    let (passing, passing_port, _) = imgate(
        dir.path(),
        "passthrough",
        &["--policy", &policy],
        prosody_port,
        &server_cert,
    );
    let server_roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server_cert)
        .expect("pem")
        .filter_map(Result::ok)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!("memory per idle XMPP session ({count} sessions, resident memory of the relay):");
    let reference = measure(
        &runtime,
        "HAProxy (TCP relay)",
        haproxy.0.id(),
        haproxy_port,
        server_roots.clone(),
        count,
    );
    let unread = measure(
        &runtime,
        "imgate (TLS passed through, unread)",
        passing.0.id(),
        passing_port,
        server_roots,
        count,
    );
    let ours = measure(
        &runtime,
        "imgate (TLS intercepted, stanzas read)",
        imgate_up.0.id(),
        imgate_port,
        imgate_roots(&data),
        count,
    );
    println!(
        "  imgate / HAProxy: {:.2} intercepted, {:.2} passed through",
        ours / reference.max(0.01),
        unread / reference.max(0.01)
    );
}
