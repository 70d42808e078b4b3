//! XMPP message throughput and added latency, side by side in one run: a client talking to
//! Prosody directly, through HAProxy as a plain TCP relay, and through `imgate up` with the
//! embedded policy (every message inspected and archived, fail-closed, in both directions),
//! once forwarding when a record is written to the log and once when it is fsynced.
//! The client logs in (STARTTLS, SASL PLAIN, bind) and sends chat messages to its own full
//! JID, so each message crosses the relay twice.
//! Run: `cargo bench --bench xmpp_relay` (needs prosody, haproxy and openssl installed).

mod support;

use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::common::prosody;
use support::{haproxy, imgate, imgate_roots, login, pin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MESSAGES: usize = 20_000;
/// Messages per second of the light-load latency run.
const LIGHT_RATE: f64 = 500.0;

/// Sends `count` messages to the own JID, at most `rate` per second (0: as fast as
/// possible); returns messages per second and the latencies.
async fn run(
    port: u16,
    roots: &[CertificateDer<'static>],
    count: usize,
    rate: f64,
) -> (f64, Vec<Duration>) {
    let (tls, jid) = login(port, roots, "bench").await;
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

/// Rounds of the latency runs; the paths take turns, and each figure is the median round,
/// so that a burst of noise on this shared machine does not decide a comparison.
const ROUNDS: usize = 3;

/// Runs each path for 5 s at `rate` messages per second, [`ROUNDS`] times in turn, and
/// prints the median round's p50 and p99 (and the range of the p99s).
fn latency(
    runtime: &tokio::runtime::Runtime,
    paths: &[(&str, u16, &Vec<CertificateDer<'static>>)],
    rate: f64,
    what: &str,
) {
    println!("latency at {rate:.0} messages/s ({what}), {ROUNDS} rounds of 5 s each:");
    let mut rounds: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); paths.len()];
    for _ in 0..ROUNDS {
        for ((_, port, roots), results) in paths.iter().zip(&mut rounds) {
            let (_, mut latencies) =
                runtime.block_on(run(*port, roots, (rate * 5.0) as usize, rate));
            results.push((
                percentile(&mut latencies, 0.5),
                percentile(&mut latencies, 0.99),
            ));
        }
    }
    let mut medians = Vec::new();
    for ((name, _, _), results) in paths.iter().zip(&mut rounds) {
        let mut p50: Vec<Duration> = results.iter().map(|r| r.0).collect();
        let mut p99: Vec<Duration> = results.iter().map(|r| r.1).collect();
        let (p50, low, p99, high) = (
            percentile(&mut p50, 0.5),
            p99.iter().min().copied().unwrap_or_default(),
            percentile(&mut p99, 0.5),
            p99.iter().max().copied().unwrap_or_default(),
        );
        println!(
            "  {name:<40} p50 {:>7.3} ms  p99 {:>7.3} ms  (p99 {:.3}-{:.3} ms)",
            ms(p50),
            ms(p99),
            ms(low),
            ms(high)
        );
        medians.push((p50, p99));
    }
    let added = |i: usize| {
        (
            ms(medians[i].0) - ms(medians[0].0),
            ms(medians[i].1) - ms(medians[0].1),
        )
    };
    for (i, name) in [
        (1, "HAProxy"),
        (2, "imgate"),
        (3, "imgate forwarding after fsync"),
    ] {
        let (p50, p99) = added(i);
        println!("  added over direct by {name}: p50 {p50:+.3} ms, p99 {p99:+.3} ms");
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn percentile(latencies: &mut [Duration], q: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("xmpp_relay: bench");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, prosody_port, server_cert) = prosody(dir.path());
    // With two or more cores, the relays under test get the last core and the server and the
    // load generator the others, so that they do not compete with the relay (set
    // `BENCH_NO_PIN=1` to leave scheduling to the kernel). The relays start confined to their
    // core (they inherit it from this process), so each sizes its threads for one core, as in
    // a pod limited to one CPU: HAProxy runs one thread and imgate one runtime worker.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinning = (cores >= 2 && std::env::var_os("BENCH_NO_PIN").is_none())
        .then(|| ((cores - 1).to_string(), format!("0-{}", cores - 2)));
    let mut pinned = pinning
        .as_ref()
        .is_some_and(|(relay, _)| pin(std::process::id(), relay));
    let (_haproxy_relay, haproxy_port) = haproxy(dir.path(), prosody_port, 4000);
    let metrics_port = support::common::free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (_written, front, data) = imgate(
        dir.path(),
        "written",
        &["--forward-after", "written", "--metrics", &metrics],
        prosody_port,
        &server_cert,
    );
    let (_synced, synced_front, synced_data) = imgate(
        dir.path(),
        "synced",
        &["--forward-after", "synced"],
        prosody_port,
        &server_cert,
    );
    if let Some((relay, rest)) = &pinning {
        pinned &= [server.0.id(), std::process::id()]
            .into_iter()
            .all(|pid| pin(pid, rest));
        println!(
            "{}",
            if pinned {
                format!(
                    "relays started on CPU {relay}; Prosody and the client pinned to CPUs {rest}"
                )
            } else {
                "could not pin processes to CPUs (taskset); scheduling left to the kernel".into()
            }
        );
    }
    let server_roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server_cert)
        .expect("pem")
        .filter_map(Result::ok)
        .collect();
    let (imgate_roots, synced_roots) = (imgate_roots(&data), imgate_roots(&synced_data));
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
    held(&support::common::scrape(metrics_port));
}

/// Prints, from imgate's `imgate_held_seconds` histogram (default `written` instance, all
/// runs above), the bucket bounds under which half and 99 % of the forwarded batches were
/// held: the part of the added latency spent inside imgate.
fn held(metrics: &str) {
    println!("time imgate held a batch before forwarding it (imgate_held_seconds, all runs):");
    for direction in ["outbound", "inbound"] {
        let buckets: Vec<(f64, f64)> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("imgate_held_seconds_bucket{")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .filter_map(|l| {
                let bound = l.split("le=\"").nth(1)?.split('"').next()?;
                let count = l.rsplit(' ').next()?;
                Some((bound.parse().ok()?, count.parse().ok()?))
            })
            .collect();
        let total = buckets.last().map_or(0.0, |b| b.1);
        let under = |q: f64| {
            buckets
                .iter()
                .find(|(_, count)| *count >= q * total)
                .map_or(f64::INFINITY, |(bound, _)| *bound * 1e3)
        };
        println!(
            "  {direction:<8} {total:>8.0} batches: half within {} ms, 99 % within {} ms",
            under(0.5),
            under(0.99)
        );
    }
}
