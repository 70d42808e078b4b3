//! The tunnel against a TCP+TLS relay, side by side in one run. Both carry a client's TCP
//! connections to an echo server through two processes:
//! - **tunnel**: `imgate connector run` (a port-forward) → one QUIC connection with mutual
//!   TLS → `imgate up --tunnel` → the echo server. The dataplane runs its whole session
//!   pipeline (identification, policy, session records in the archive). Loopback carries
//!   the largest datagrams the tunnel uses (`endpoint::MAX_DATAGRAM`), as a network with
//!   jumbo frames does;
//! - **tunnel at 1,452**: the same dataplane and another connector held to datagrams of
//!   1,452 bytes (`--max-datagram`), as over the internet;
//! - **TCP+TLS**: a client relay → one TCP connection and TLS session (tokio-rustls, the same
//!   rustls configurations and certificates as the tunnel) per client connection → a server
//!   relay → the echo server. The relays are this binary, started again in another role.
//!
//! Measured on each path: one connection's throughput (bytes echoed back) and the CPU time
//! the two relay processes spend on it per GiB, connections opened per second (each one
//! echoing a few bytes); and, for the tunnel and TCP+TLS, the resident memory each of the two
//! processes adds per idle connection at 10,000 connections (`TUNNEL_SESSIONS=N` for another
//! count).
//! Run: `cargo bench --bench tunnel` (needs prlimit and root for the open-file limit).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgate_dataplane::tunnel::trust::{
    TunnelCa, connector_config, connector_identity, connector_request, dataplane_config,
};
use support::common::tunnel::{enrolled, run_connector};
use support::common::{Killed, free_port, imgate_up, wait_for_line, wait_for_port};
use support::{cpu_seconds, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const DEFAULT_SESSIONS: usize = 10_000;
/// Bytes echoed through one connection for the throughput figure.
const BULK: usize = 256 << 20;
/// Connections opened for the rate figure.
const OPENED: usize = 2_000;
/// Connections being opened at once.
const CONCURRENCY: usize = 32;
/// What each short or idle connection echoes: bytes no protocol detector claims.
const PING: &[u8; 16] = b"\x00\x01imgate-bench\x02\x03";

/// The relays' buffer in each direction: what the tunnel's relays move at once.
const CHUNK: usize = 64 << 10;

/// The role this process plays when started again as a relay.
const ROLE: &str = "TUNNEL_BENCH_ROLE";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        relay(&role);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("tunnel: bench");
        return;
    }
    let wanted: usize = std::env::var("TUNNEL_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SESSIONS);
    let limit = support::raise_file_limit(4 * wanted as u64 + 4096);
    let count = wanted.min((limit as usize).saturating_sub(2048) / 2);
    if count < wanted {
        println!("only {count} sessions fit the open-file limit of {limit}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let echo = runtime.block_on(echo_server());
    let dir = tempfile::tempdir().expect("tempdir");

    // The tunnel: a dataplane and an enrolled connector keeping enough connections for
    // `count` streams.
    let data = dir.path().join("dataplane");
    let tunnel: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let (dataplane, _) = imgate_up(
        9,
        &data,
        &[
            "--tunnel",
            &tunnel.to_string(),
            "--metrics",
            "off",
            "--seal-seconds",
            "20",
            "--workers",
            "1",
        ],
    );
    let identity = enrolled(dir.path(), &data, "bench", &[tunnel]);
    let connections = (count / 4096 + 1).to_string();
    let connector = run_connector(
        &identity,
        &[tunnel],
        &echo.to_string(),
        &["--connections", &connections],
    );
    wait_for_line(&connector.log, &["connected to the dataplane"]);

    // The reference: two relays of this binary, with the same certificates and TLS settings.
    let ca_dir = dir.path().join("relay-ca");
    TunnelCa::load_or_generate(&ca_dir, "bench").expect("CA");
    let server_port = free_port();
    let server_relay = start_relay("server", &ca_dir, server_port, echo.port());
    let client_port = free_port();
    let client_relay = start_relay("client", &ca_dir, client_port, server_port);

    println!("tunnel against TCP+TLS, {count} idle sessions");
    let tunnel_path = (
        "tunnel",
        connector.port,
        connector.process.0.id(),
        dataplane.0.id(),
    );
    let tcp_path = (
        "TCP+TLS",
        client_port,
        client_relay.0.id(),
        server_relay.0.id(),
    );
    // Memory first, on fresh processes: after thousands of connections have come and gone,
    // memory the allocator keeps would hide what idle sessions cost.
    for (name, port, near, far) in [tunnel_path, tcp_path] {
        runtime.block_on(idle_memory(name, port, near, far, count));
    }

    let held = enrolled(dir.path(), &data, "bench-1452", &[tunnel]);
    let held = run_connector(
        &held,
        &[tunnel],
        &echo.to_string(),
        &["--max-datagram", "1452"],
    );
    wait_for_line(&held.log, &["connected to the dataplane"]);
    let paths = [
        tunnel_path,
        (
            "tunnel at 1,452",
            held.port,
            held.process.0.id(),
            dataplane.0.id(),
        ),
        tcp_path,
    ];
    // The closed sessions' records are archived in the background: wait for quiet.
    for (_, _, near, far) in paths {
        settle(near, far);
    }
    let mut throughput = [0.0; 3];
    let mut rate = [0.0; 3];
    let mut cpu = [f64::MAX; 3];
    for round in 0..3 {
        for (i, (name, port, near, far)) in paths.iter().enumerate() {
            let spent = || cpu_seconds(*near) + cpu_seconds(*far);
            let before = spent();
            let mbps = runtime.block_on(bulk(*port));
            let per_gib = (spent() - before) / (BULK as f64 / f64::from(1u32 << 30));
            let per_second = runtime.block_on(open_many(*port, OPENED));
            println!(
                "  round {round} {name:<15} {mbps:>8.1} MB/s ({per_gib:.2} CPU s per GiB)  {per_second:>8.0} connections/s"
            );
            throughput[i] = f64::max(throughput[i], mbps);
            cpu[i] = f64::min(cpu[i], per_gib);
            rate[i] = f64::max(rate[i], per_second);
        }
    }
    println!("  best of three, against TCP+TLS:");
    for (i, (name, ..)) in paths.iter().enumerate().take(2) {
        println!(
            "    {name:<15} throughput {:.2}, CPU per byte {:.2}, connections per second {:.2}",
            throughput[i] / throughput[2],
            cpu[i] / cpu[2],
            rate[i] / rate[2]
        );
    }
    drop(held);
    drop(connector);
    drop(dataplane);
}

/// Waits (up to a minute) until processes `near` and `far` together use under a tenth of a
/// CPU over a second.
fn settle(near: u32, far: u32) {
    let spent = || cpu_seconds(near) + cpu_seconds(far);
    for _ in 0..60 {
        let before = spent();
        std::thread::sleep(Duration::from_secs(1));
        if spent() - before < 0.1 {
            return;
        }
    }
    println!("  processes {near} and {far} were still busy after a minute");
}

/// Echoes every connection's bytes back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("echo");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// One connection's throughput through `port`: [`BULK`] bytes sent and echoed back, in MB/s.
async fn bulk(port: u16) -> f64 {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 << 10];
        let mut sent = 0;
        while sent < BULK {
            write.write_all(&chunk).await.expect("write");
            sent += chunk.len();
        }
        write
    });
    let mut buffer = vec![0u8; 64 << 10];
    let mut received = 0;
    while received < BULK {
        let read = read.read(&mut buffer).await.expect("read");
        assert!(read > 0, "the path closed after {received} bytes");
        received += read;
    }
    drop(writer.await.expect("writer"));
    BULK as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Opens a connection through `port` and echoes [`PING`] through it.
async fn ping(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    stream.write_all(PING).await.expect("write");
    let mut back = [0u8; PING.len()];
    stream.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, PING);
    stream
}

/// Opens `count` connections through `port`, [`CONCURRENCY`] at a time, each echoing once;
/// returns connections per second.
async fn open_many(port: u16, count: usize) -> f64 {
    let start = Instant::now();
    let mut pending = JoinSet::new();
    for _ in 0..count {
        if pending.len() >= CONCURRENCY {
            pending.join_next().await;
        }
        pending.spawn(async move { drop(ping(port).await) });
    }
    while pending.join_next().await.is_some() {}
    count as f64 / start.elapsed().as_secs_f64()
}

/// Holds `count` idle connections through `port` and prints what each end's process (`near`,
/// `far`) adds per connection.
async fn idle_memory(name: &str, port: u16, near: u32, far: u32, count: usize) {
    // The first connection's shared costs are not counted.
    drop(ping(port).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = (rss_kib(near), rss_kib(far));
    let mut held = Vec::with_capacity(count);
    let mut pending = JoinSet::new();
    for _ in 0..count {
        if pending.len() >= CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            held.push(done.expect("connection"));
        }
        pending.spawn(ping(port));
    }
    while let Some(done) = pending.join_next().await {
        held.push(done.expect("connection"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = (rss_kib(near), rss_kib(far));
    let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / count as f64;
    println!(
        "  {name:<8} idle: near end {:.2} KiB per session ({} → {} KiB), far end {:.2} KiB per session ({} → {} KiB)",
        per(before.0, after.0),
        before.0,
        after.0,
        per(before.1, after.1),
        before.1,
        after.1
    );
    drop(held);
}

/// Starts this binary as the `role` relay (`client` or `server`), listening on `port` and
/// relaying to `upstream`, with certificates from the CA in `ca_dir`.
fn start_relay(role: &str, ca_dir: &Path, port: u16, upstream: u16) -> Killed {
    let child = Command::new(std::env::current_exe().expect("this binary"))
        .env(ROLE, role)
        .arg(ca_dir)
        .arg(port.to_string())
        .arg(upstream.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("relay");
    let relay = Killed(child);
    wait_for_port(port, "relay");
    relay
}

/// Runs a relay role: `client` accepts plain TCP and opens a TLS connection to the server
/// relay for each; `server` accepts TLS and opens a plain TCP connection upstream for each.
fn relay(role: &str) {
    let args: Vec<String> = std::env::args().collect();
    let ca = TunnelCa::load_or_generate(Path::new(&args[1]), "bench").expect("CA");
    let port: u16 = args[2].parse().expect("port");
    let upstream: u16 = args[3].parse().expect("upstream");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("listen");
        match role {
            "server" => {
                let identity = ca
                    .issue_dataplane(&["localhost".to_owned()], Duration::from_secs(86_400))
                    .expect("identity");
                let config = dataplane_config(ca.certificate(), identity).expect("TLS");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                loop {
                    let (client, _) = listener.accept().await.expect("accept");
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = client.set_nodelay(true);
                        let Ok(mut tls) = acceptor.accept(client).await else {
                            return;
                        };
                        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut tls,
                            &mut upstream,
                            CHUNK,
                            CHUNK,
                        )
                        .await;
                    });
                }
            }
            _ => {
                let (key, request) = connector_request("bench").expect("request");
                let cert = ca.sign_connector(&request, "bench", 1).expect("cert");
                let identity = connector_identity(&key, cert).expect("identity");
                let config = connector_config(ca.certificate(), identity).expect("TLS");
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                loop {
                    let (mut client, _) = listener.accept().await.expect("accept");
                    let connector = connector.clone();
                    tokio::spawn(async move {
                        let _ = client.set_nodelay(true);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                            return;
                        };
                        let _ = server.set_nodelay(true);
                        let name =
                            rustls_pki_types::ServerName::try_from("localhost").expect("name");
                        let Ok(mut tls) = connector.connect(name, server).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional_with_sizes(
                            &mut client,
                            &mut tls,
                            CHUNK,
                            CHUNK,
                        )
                        .await;
                    });
                }
            }
        }
    });
}
