//! Alerts delivered per second to a webhook, beside the same POSTs sent by a plain HTTP
//! client (hyper, one connection, one request at a time, as imgate sends them), and the
//! latency from a message's record to its alert at the receiver, p50 and p99, at a steady
//! 200 messages a second.
//! Run: `cargo bench -p imgate-dataplane --bench alerts` (about 30 s).
//!
//! Every record written matches a rule and comes from a sender of its own, so each is an
//! alert of its own: the whole path runs for each (the archive log, the reader, the outbox,
//! the signed POST, the journal entry once the receiver answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use imgate_crds::policy::{Direction, Protocol, Severity};
use imgate_dataplane::alerts::config::{Kind, Receiver, Settings};
use imgate_dataplane::alerts::{AlertMetrics, Alerting, Timing};
use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::record::{Kind as ConversationKind, Participant, RecordedVerdict};
use imgate_dataplane::archive::{ArchiveLog, Body, LogConfig, Record};
use imgate_dataplane::inspect::policy::Action;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the receiver saw: when each alert arrived, and each request's body.
#[derive(Default)]
struct Seen {
    arrived: HashMap<String, Instant>,
    bodies: Vec<Vec<u8>>,
}

/// A minimal HTTP/1.1 receiver answering 200 to every POST, keeping connections open.
async fn receiver() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let seen = shared.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buffer.drain(..end + 4 + length).skip(end + 4).collect();
                    let now = Instant::now();
                    if let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) {
                        let mut seen = seen.lock().expect("lock");
                        for alert in document["alerts"].as_array().into_iter().flatten() {
                            if let Some(id) = alert["id"].as_str() {
                                seen.arrived.entry(id.to_owned()).or_insert(now);
                            }
                        }
                        seen.bodies.push(body);
                    }
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn hit(seq: u64, i: usize) -> Record {
    Record {
        v: 1,
        tenant: "meridian-capital".into(),
        writer: "dataplane-0".into(),
        seq,
        ts: Utc::now(),
        conv: format!("xmpp:trader{i}@chat.example/client@chat.example"),
        body: Body::Message {
            session: format!("s{i}"),
            dir: Direction::Outbound,
            protocol: Protocol::Xmpp,
            from: Participant {
                handle: format!("trader{i}@chat.example"),
                person: Some(format!("trader{i}@meridian.example")),
            },
            to: vec!["client@chat.example".into()],
            room: None,
            kind: ConversationKind::Direct,
            text: "this is a guaranteed return".into(),
            text_base64: None,
            delivered: None,
            verdict: RecordedVerdict {
                action: Action::Allow,
                monitor: Action::Allow,
                rules: vec!["firm/promissory".into()],
                severities: vec![Severity::High],
            },
            msgid: None,
        },
    }
}

/// A log in `dir` and alerting from it to the receiver on `port`, running.
fn start(dir: &std::path::Path, port: u16) -> ArchiveLog {
    let (log, _) = ArchiveLog::open(StdFs, &dir.join("wal"), LogConfig::default()).expect("log");
    let settings = Settings {
        window: Duration::from_secs(3600),
        receivers: vec![Receiver {
            name: "hook".into(),
            min_severity: Severity::Low,
            include_text: false,
            allow_private: true,
            kind: Kind::Webhook {
                url: format!("http://127.0.0.1:{port}/alerts")
                    .parse()
                    .expect("url"),
                secret: b"bench".to_vec(),
            },
        }],
        broken: Vec::new(),
    };
    let alerting = Alerting::open(
        settings,
        ("meridian-capital", "dataplane-0"),
        &dir.join("alerts"),
        log.clone(),
        AlertMetrics::default(),
        Timing::default(),
    )
    .expect("alerts");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = _stop;
        alerting.run(stopped).await;
    });
    log
}

async fn wait_for(seen: &Mutex<Seen>, count: usize) {
    while seen.lock().expect("lock").arrived.len() < count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn throughput(alerts: usize) -> (f64, f64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, seen) = receiver().await;
    let log = start(dir.path(), port);
    let started = Instant::now();
    for i in 0..alerts {
        log.append(|seq| hit(seq, i)).expect("append");
    }
    wait_for(&seen, alerts).await;
    let imgate = alerts as f64 / started.elapsed().as_secs_f64();
    let bodies = std::mem::take(&mut seen.lock().expect("lock").bodies);

    // The same POSTs from a plain client, to a fresh receiver.
    let (port, _) = receiver().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let url: http::Uri = format!("http://127.0.0.1:{port}/alerts")
        .parse()
        .expect("url");
    let started = Instant::now();
    for body in &bodies {
        let request = http::Request::post(url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let response = client.request(request).await.expect("response");
        assert!(response.status().is_success());
    }
    let reference = alerts as f64 / started.elapsed().as_secs_f64();
    (imgate, reference, bodies.len())
}

async fn latency(alerts: usize, every: Duration) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, seen) = receiver().await;
    let log = start(dir.path(), port);
    let mut written = HashMap::new();
    let mut tick = tokio::time::interval(every);
    for i in 0..alerts {
        tick.tick().await;
        let seq = log.append(|seq| hit(seq, i)).expect("append");
        written.insert(format!("dataplane-0-{seq}.0"), Instant::now());
    }
    wait_for(&seen, alerts).await;
    let seen = seen.lock().expect("lock");
    let mut latencies: Vec<Duration> = written
        .iter()
        .map(|(id, at)| seen.arrived[id].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let alerts = 8_000;
        let (imgate, reference, posts) = throughput(alerts).await;
        println!(
            "alerts to a webhook: imgate {imgate:.0} alerts/s ({alerts} alerts in {posts} POSTs); plain HTTP client, the same POSTs: {reference:.0} alerts/s; ratio {:.2}",
            imgate / reference
        );
        let (p50, p99) = latency(2_000, Duration::from_millis(5)).await;
        println!(
            "message record to alert at the webhook, 200 messages/s: p50 {:.1} ms, p99 {:.1} ms (goal: under 1 s)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    });
}
