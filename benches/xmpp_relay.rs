//! XMPP message throughput and added latency, side by side in one run: a client talking to
//! Prosody directly, through HAProxy as a plain TCP relay, and through `imgate up` with the
//! embedded policy (every message inspected and archived, fail-closed, in both directions),
//! once forwarding when a record is written to the log and once when it is fsynced.
//! The client logs in (STARTTLS, SASL PLAIN, bind) and sends chat messages to its own full
//! JID, so each message crosses the relay twice. Throughput: [`THROUGHPUT_ROUNDS`] rounds of
//! [`MESSAGES`] per path, the paths taking turns. Latency: [`ROUNDS`] rounds, each giving every
//! path [`ROUND_SECONDS`] at the same rate; what a relay adds is the median over rounds of its
//! p50 and p99 minus direct's in the same round. Each round also measures the floor: a
//! one-byte round trip between the client's core and the relays' core. Each path logs in once
//! and keeps its session for all of its turns. Each latency run prints how long imgate held
//! its batches (its `imgate_held_seconds` histogram) and the steal time the host took from
//! this virtual machine meanwhile.
//! `BENCH_RATE=N` runs only the latency rounds, at N messages per second.
//! `BENCH_AWAKE=1` keeps every core from halting during the latency runs (see
//! [`keep_cores_awake`]), which takes this virtual machine's cost of waking a core out of the
//! figures.
//! Run: `cargo bench --bench xmpp_relay` (needs prosody, haproxy and openssl installed).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::common::{Killed, free_port, prosody, wait_for_port};
use support::{haproxy, imgate, imgate_roots, login, pin};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream as AsyncTcpStream;
use tokio_rustls::client::TlsStream;

/// Set in the environment of this binary started again as the echo peer of [`handoff`].
const ROLE: &str = "XMPP_RELAY_ROLE";

/// Messages per path and round of the throughput run.
const MESSAGES: usize = 10_000;
/// Rounds of the throughput run.
const THROUGHPUT_ROUNDS: usize = 3;
/// How long a run waits for its next message before it fails, naming what it saw.
const STALL: Duration = Duration::from_secs(30);
/// Messages per second of the light-load latency run.
const LIGHT_RATE: f64 = 500.0;

/// A client logged in to Prosody through one path, kept for all of that path's turns so
/// that no turn starts with a login (TLS handshakes on every hop, SASL, bind).
struct Session {
    name: &'static str,
    jid: String,
    reader: ReadHalf<TlsStream<AsyncTcpStream>>,
    writer: Option<WriteHalf<TlsStream<AsyncTcpStream>>>,
    /// Received text not yet matched to a message.
    pending: String,
}

impl Session {
    /// Logs in as resource `resource` (one per session: a second login with the same full
    /// JID replaces the first).
    async fn open(
        name: &'static str,
        port: u16,
        roots: &[CertificateDer<'static>],
        resource: &str,
    ) -> Self {
        let (tls, jid) = login(port, roots, resource).await;
        let (reader, writer) = tokio::io::split(tls);
        Self {
            name,
            jid,
            reader,
            writer: Some(writer),
            pending: String::new(),
        }
    }

    /// Sends `count` messages to the own JID, at most `rate` per second (0: as fast as
    /// possible); returns messages per second and the latencies.
    async fn run(&mut self, count: usize, rate: f64) -> (f64, Vec<Duration>) {
        let mut writer = self
            .writer
            .take()
            .expect("the writer is back after each run");
        let jid = self.jid.clone();
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
            // TLS may hold the last records back until flushed.
            writer.flush().await.expect("flush");
            writer
        });
        let mut latencies = Vec::with_capacity(count);
        let mut chunk = vec![0u8; 65536];
        while latencies.len() < count {
            let n = tokio::time::timeout(STALL, self.reader.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: nothing arrived for {STALL:?} after {} of {count} messages; \
                         unparsed: {:?}",
                        self.name,
                        latencies.len(),
                        self.pending
                    )
                })
                .expect("read");
            assert!(
                n > 0,
                "{}: the stream closed after {} of {count} messages; unparsed: {:?}",
                self.name,
                latencies.len(),
                self.pending
            );
            self.pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
            while let Some(at) = self.pending.find("<body>t") {
                let Some(stamp) = self.pending.get(at + 7..at + 27) else {
                    break;
                };
                if let Ok(sent) = stamp.parse::<u128>() {
                    latencies.push(
                        start
                            .elapsed()
                            .saturating_sub(Duration::from_nanos(sent as u64)),
                    );
                }
                self.pending.drain(..at + 27);
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        self.writer = Some(sender.await.expect("sender"));
        (count as f64 / elapsed, latencies)
    }
}

/// Sends [`MESSAGES`] as fast as possible on each path, [`THROUGHPUT_ROUNDS`] times, the
/// paths taking turns; prints each path's median rate and each imgate's median ratio to
/// HAProxy's rate in the same round, and returns the median rates.
fn throughput(runtime: &tokio::runtime::Runtime, sessions: &mut [Session]) -> Vec<f64> {
    println!(
        "XMPP, {MESSAGES} messages to the own JID (each crosses the relay twice), \
         {THROUGHPUT_ROUNDS} rounds:"
    );
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); sessions.len()];
    for round in 0..THROUGHPUT_ROUNDS {
        for turn in 0..sessions.len() {
            let path = (round + turn) % sessions.len();
            let (rate, _) = runtime.block_on(sessions[path].run(MESSAGES, 0.0));
            rounds[path].push(rate);
        }
    }
    let mut medians = Vec::new();
    for (Session { name, .. }, rates) in sessions.iter().zip(&rounds) {
        let rate = spread(rates.iter().copied());
        println!(
            "  {name:<40} {:>9.0} messages/s  ({:.0}-{:.0})",
            rate.median, rate.low, rate.high
        );
        medians.push(rate.median);
    }
    let ratio = |i: usize| spread(rounds[i].iter().zip(&rounds[1]).map(|(r, h)| r / h)).median;
    println!(
        "  imgate / HAProxy, median of the rounds: {:.2} ({:.2} forwarding after fsync)",
        ratio(2),
        ratio(3)
    );
    medians
}

/// Rounds of the latency runs and the length of each path's turn in a round. Many short
/// rounds rather than a few long ones: a burst of noise on this shared machine spoils a round
/// or two, and the figures are medians over rounds.
const ROUNDS: usize = 9;
const ROUND_SECONDS: f64 = 2.0;

/// Runs each path for [`ROUND_SECONDS`] at `rate` messages per second, [`ROUNDS`] times,
/// the paths taking turns (each round starting with the next path, so that no path always
/// follows the same one). Prints each path's median round (p50, p99 and the range of the
/// p99s), then what each relay adds over direct: per round, the relay's p50 and p99 minus
/// direct's in the same round, and the median of those differences with their middle half.
fn latency(
    runtime: &tokio::runtime::Runtime,
    sessions: &mut [Session],
    echo: u16,
    rate: f64,
    what: &str,
) {
    println!(
        "latency at {rate:.0} messages/s ({what}), {ROUNDS} rounds of {ROUND_SECONDS} s per path:"
    );
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); sessions.len()];
    let mut handoffs = Vec::new();
    for round in 0..ROUNDS {
        handoffs.push(p50_p99(&mut handoff(echo, rate)));
        for turn in 0..sessions.len() {
            let path = (round + turn) % sessions.len();
            let (_, mut latencies) =
                runtime.block_on(sessions[path].run((rate * ROUND_SECONDS) as usize, rate));
            rounds[path].push(p50_p99(&mut latencies));
        }
    }
    for (Session { name, .. }, results) in sessions.iter().zip(&rounds) {
        let p50 = spread(results.iter().map(|r| r.0));
        let p99 = spread(results.iter().map(|r| r.1));
        println!(
            "  {name:<40} p50 {:>7.3} ms  p99 {:>7.3} ms  (p99 {:.3}-{:.3} ms)",
            p50.median, p99.median, p99.low, p99.high
        );
    }
    let (p50, p99) = (
        spread(handoffs.iter().map(|r| r.0)),
        spread(handoffs.iter().map(|r| r.1)),
    );
    println!(
        "  one round trip between the cores (1-byte echo) p50 {:>7.3} ms  p99 {:>7.3} ms  (p99 {:.3}-{:.3} ms)",
        p50.median, p99.median, p99.low, p99.high
    );
    for (i, name) in [
        (1, "HAProxy"),
        (2, "imgate"),
        (3, "imgate forwarding after fsync"),
    ] {
        let added = |part: fn(&(f64, f64)) -> f64| {
            spread(
                rounds[i]
                    .iter()
                    .zip(&rounds[0])
                    .map(|(relay, direct)| part(relay) - part(direct)),
            )
        };
        let (p50, p99) = (added(|r| r.0), added(|r| r.1));
        println!(
            "  added over direct by {name}: p50 {:+.3} ms (middle half {:+.3} to {:+.3}), p99 {:+.3} ms (middle half {:+.3} to {:+.3})",
            p50.median, p50.q1, p50.q3, p99.median, p99.q1, p99.q3
        );
    }
}

/// The median, quartiles and range of some figures.
struct Spread {
    low: f64,
    q1: f64,
    median: f64,
    q3: f64,
    high: f64,
}

fn spread(values: impl Iterator<Item = f64>) -> Spread {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Spread {
        low: at(0.0),
        q1: at(0.25),
        median: at(0.5),
        q3: at(0.75),
        high: at(1.0),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The p50 and p99 of some latencies, in milliseconds.
fn p50_p99(latencies: &mut [Duration]) -> (f64, f64) {
    (
        ms(percentile(latencies, 0.5)),
        ms(percentile(latencies, 0.99)),
    )
}

fn percentile(latencies: &mut [Duration], q: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("spin") => spin(),
        Ok(_) => return echo(),
        Err(_) => {}
    }
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
    let echo_port = free_port();
    let _echo = Killed(
        Command::new(std::env::current_exe().expect("this binary"))
            .env(ROLE, "echo")
            .arg(echo_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("echo peer"),
    );
    wait_for_port(echo_port, "echo peer");
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
    let mut sessions: Vec<Session> = paths
        .iter()
        .enumerate()
        .map(|(i, &(name, port, roots))| {
            runtime.block_on(Session::open(name, port, roots, &format!("bench-{i}")))
        })
        .collect();
    let runs = match std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
    {
        Some(rate) => vec![(rate, "BENCH_RATE")],
        None => {
            let rates = throughput(&runtime, &mut sessions);
            let half = rates[2].min(rates[1]) / 2.0;
            vec![
                (half, "half of the slower relay's rate"),
                (LIGHT_RATE, "light load"),
            ]
        }
    };
    for (rate, what) in runs {
        let _awake = std::env::var_os("BENCH_AWAKE").map(|_| keep_cores_awake(cores));
        let before = held(&support::common::scrape(metrics_port));
        let (steal_before, started) = (steal_seconds(), Instant::now());
        latency(&runtime, &mut sessions, echo_port, rate, what);
        let after = held(&support::common::scrape(metrics_port));
        print_held(&before, &after);
        if let (Some(before), Some(after)) = (steal_before, steal_seconds()) {
            println!(
                "  CPU time the host gave to others while this machine's CPUs wanted it (steal): \
                 {:.2} s of the run's {:.0} s",
                after - before,
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The steal time of all CPUs so far, in seconds (`/proc/stat`, in ticks of 10 ms): time a
/// virtual machine's CPUs were ready to run while the host ran something else. A run that
/// shows seconds of it measured the host's load as much as the paths.
fn steal_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: f64 = stat
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    Some(ticks / 100.0)
}

/// Keeps each of the `cores` CPUs from halting: one process per core in the idle scheduling
/// class (`chrt --idle`), which spins and yields to any other task at once.
fn keep_cores_awake(cores: usize) -> Vec<Killed> {
    (0..cores)
        .map(|core| {
            Killed(
                Command::new("chrt")
                    .args(["--idle", "0", "taskset", "-c", &core.to_string()])
                    .arg(std::env::current_exe().expect("this binary"))
                    .env(ROLE, "spin")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("chrt and taskset"),
            )
        })
        .collect()
}

fn spin() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// The echo peer: started on the relays' core like them, it answers each byte on one
/// loopback connection at a time with the same byte, and does nothing else.
fn echo() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("port");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {}
    }
}

/// The floor under any relay's added latency on this machine: round trips of one byte
/// between this process (on the client's core) and the echo peer (on the relays' core), at
/// `rate` per second for [`ROUND_SECONDS`]. A relay on its own core crosses between the
/// cores four times per message, as two of these round trips do; direct crosses never.
fn handoff(port: u16, rate: f64) -> Vec<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("echo peer");
    stream.set_nodelay(true).expect("nodelay");
    let count = (rate * ROUND_SECONDS) as usize;
    let start = Instant::now();
    let mut byte = [0u8; 1];
    (0..count)
        .map(|i| {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let sent = Instant::now();
            stream.write_all(&byte).expect("echo write");
            stream.read_exact(&mut byte).expect("echo read");
            sent.elapsed()
        })
        .collect()
}

/// Cumulative counts of imgate's `imgate_held_seconds` histogram (default `written`
/// instance), by direction: (bucket bound in seconds, batches held at most that long).
type Held = Vec<(&'static str, Vec<(f64, f64)>)>;

fn held(metrics: &str) -> Held {
    ["outbound", "inbound"]
        .into_iter()
        .map(|direction| {
            let buckets = metrics
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
            (direction, buckets)
        })
        .collect()
}

/// Prints, for the batches imgate forwarded between two scrapes (one latency run), the
/// share held at most each bucket bound: the part of the added latency spent inside imgate,
/// from the read that completed a batch to its forwarding.
fn print_held(before: &Held, after: &Held) {
    println!("  time imgate held a batch before forwarding it (imgate_held_seconds, this run):");
    for ((direction, before), (_, after)) in before.iter().zip(after) {
        let counts: Vec<(f64, f64)> = after
            .iter()
            .zip(before.iter().map(|b| b.1).chain(std::iter::repeat(0.0)))
            .map(|(&(bound, now), then)| (bound, now - then))
            .collect();
        let batches = counts.last().map_or(0.0, |c| c.1);
        let shares: Vec<String> = counts
            .iter()
            .filter(|(bound, _)| *bound <= 0.005)
            .map(|(bound, count)| {
                format!(
                    "{} ms {:.2} %",
                    bound * 1e3,
                    count / batches.max(1.0) * 100.0
                )
            })
            .collect();
        println!(
            "    {direction:<8} {batches:>7.0} batches; within {}",
            shares.join(", ")
        );
    }
}
