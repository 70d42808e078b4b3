//! Policy change latency: how long after an IMPolicy is applied new messages are judged by it,
//! end to end, side by side in one run with a reference.
//!
//! - **Through the cluster**: `imgate operator run` and `imgate up --policy-config-map policy`
//!   both talk to an in-memory Kubernetes API server over HTTP (`imgate_fake_api`, reached
//!   through a kubeconfig as a pod reaches its API server). The bench applies a changed
//!   IMPolicy with server-side apply, as `kubectl apply --server-side` does; the operator
//!   compiles it into the tenant's policy ConfigMap, which the dataplane follows.
//! - **Reference**: a dataplane that reads the same policy from a file and is sent SIGHUP
//!   after the file is rewritten: the dataplane's own part of the path (compile and swap).
//!
//! An XMPP client logs in through the dataplane (interception, Prosody behind it) and sends a
//! message naming a deal to its own JID every 5 ms; each comes back either delivered or
//! bounced with a policy error. The policy alternates between blocking and allowing that
//! name. A round's latency is the time from the apply (or the signal) to the sending of the
//! first message after which every message got the new verdict.
//! Run: `cargo bench --bench policy_latency` (needs prosody and openssl installed).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgate_crds::IMPolicy;
use imgate_fake_api::FakeApi;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::common::cluster::Cluster;
use support::common::{imgate_up_with_env, prosody, wait_for_line};
use support::{imgate_roots, login};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANT: &str = "latency-firm";
/// Where the tenant's IMPolicy lives (the operator's objects live in `imgate-TENANT`).
const POLICY_NAMESPACE: &str = "latency-firm";
const POLICY: &str = "deals";
/// How often the client sends a message.
const INTERVAL: Duration = Duration::from_millis(5);
/// Policy changes timed per path.
const ROUNDS: usize = 10;
/// Messages in a row with the new verdict that end a round.
const STEADY: usize = 40;
/// The latency of a busy API server's requests.
const BUSY: Duration = Duration::from_millis(10);
/// How long a round may take before the run is declared failed.
const LIMIT: Duration = Duration::from_secs(30);

/// The IMPolicy: the deal name blocked, or another name blocked and this one allowed.
fn policy(block: bool) -> Value {
    let keyword = if block {
        "project falcon"
    } else {
        "project osprey"
    };
    json!({
        "apiVersion": "imgate.io/v1alpha1", "kind": "IMPolicy",
        "metadata": {"name": POLICY, "namespace": POLICY_NAMESPACE},
        "spec": {
            "tenantRef": TENANT,
            "protocols": {"tls": "intercept"},
            "content": [{"name": "deal-names", "match": {"keywords": [keyword]}, "action": "block"}],
        },
    })
}

/// Each message's send time and, once it came back, whether it was blocked.
#[derive(Default)]
struct Record {
    sent: Vec<Instant>,
    blocked: BTreeMap<usize, bool>,
}

impl Record {
    /// When the verdicts settled on `blocked` for messages sent after `since`: the send time
    /// of the first message of the final run of [`STEADY`] or more with that verdict.
    fn settled(&self, since: Instant, blocked: bool) -> Option<Instant> {
        let first = self.sent.partition_point(|sent| *sent < since);
        let judged: Vec<(usize, bool)> = self
            .blocked
            .range(first..)
            .map(|(i, verdict)| (*i, *verdict))
            .collect();
        let old = judged.iter().rposition(|(_, verdict)| *verdict != blocked);
        let run = &judged[old.map_or(0, |at| at + 1)..];
        (run.len() >= STEADY).then(|| self.sent[run[0].0])
    }
}

/// The value of attribute `name` in the start tag `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}="))? + name.len() + 2;
    let quote = tag[at..].chars().next()?;
    let rest = &tag[at + 1..];
    Some(&rest[..rest.find(quote)?])
}

/// The probe's sending and reading tasks, stopped when it is dropped.
struct Probe(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Probe {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Logs in through `port` and sends a deal-naming message every [`INTERVAL`] until dropped,
/// recording what comes back.
async fn probe(port: u16, data: &Path, record: Arc<Mutex<Record>>) -> Probe {
    let (tls, jid) = login(port, &imgate_roots(data), "probe").await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let sending = record.clone();
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        for i in 0.. {
            tokio::time::sleep_until((start + INTERVAL * i).into()).await;
            sending.lock().expect("lock").sent.push(Instant::now());
            let message = format!(
                "<message id='m{i}' to='{jid}' type='chat'><body>status of project falcon, #{i}</body></message>"
            );
            writer.write_all(message.as_bytes()).await.expect("send");
        }
    });
    let reading = tokio::spawn(async move {
        let mut pending = String::new();
        let mut chunk = vec![0u8; 65536];
        loop {
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the dataplane closed the probe's stream");
            pending.push_str(&String::from_utf8_lossy(&chunk[..n]));
            while let Some(at) = pending.find("<message") {
                let Some(end) = pending[at..].find('>') else {
                    pending.drain(..at);
                    break;
                };
                let tag = &pending[at..at + end];
                if let Some(i) = attribute(tag, "id")
                    .and_then(|id| id.strip_prefix('m'))
                    .and_then(|i| i.parse().ok())
                {
                    let blocked = attribute(tag, "type") == Some("error");
                    record.lock().expect("lock").blocked.insert(i, blocked);
                }
                pending.drain(..at + end + 1);
            }
            if !pending.contains('<') {
                pending.clear();
            }
        }
    });
    Probe(vec![sender, reading])
}

/// Times [`ROUNDS`] policy changes that `change(block)` makes, alternating between allowing
/// and blocking the deal name.
async fn time_changes<F, Fut>(record: &Mutex<Record>, mut change: F) -> Vec<Duration>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut latencies = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let block = round % 2 == 1;
        let since = Instant::now();
        change(block).await;
        let settled = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(at) = record.lock().expect("lock").settled(since, block) {
                break at;
            }
            assert!(
                since.elapsed() < LIMIT,
                "round {round}: verdicts did not settle on blocked={block} within {LIMIT:?}"
            );
        };
        latencies.push(settled.saturating_duration_since(since));
    }
    latencies
}

/// Waits until every message sent from now on is blocked (the policy at start).
async fn wait_blocking(record: &Mutex<Record>) {
    let since = Instant::now();
    while record.lock().expect("lock").settled(since, true).is_none() {
        assert!(
            since.elapsed() < LIMIT,
            "the probe's messages were not blocked at start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cluster path: the operator and a dataplane following its ConfigMap, both against an
/// in-memory API server that makes each request wait `latency`; returns the latencies and the
/// API requests served while they were measured.
async fn through_cluster(
    dir: &Path,
    prosody_port: u16,
    cert: &Path,
    latency: Duration,
) -> (Vec<Duration>, BTreeMap<String, u64>) {
    let dir = dir.join(format!("cluster-{}ms", latency.as_millis()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let dir = dir.as_path();
    let cluster = Cluster::start(
        dir,
        FakeApi::new().with_latency(latency),
        TENANT,
        policy(true),
    )
    .await;
    let api = &cluster.api;
    let data = dir.join("imgate-cluster");
    let cert = cert.to_string_lossy();
    let kubeconfig = cluster.kubeconfig.to_string_lossy();
    let (_dataplane, front) = imgate_up_with_env(
        prosody_port,
        &data,
        &[
            "--tenant",
            TENANT,
            "--policy-config-map",
            "policy",
            "--extra-roots",
            &cert,
            "--metrics",
            "off",
        ],
        &[("KUBECONFIG", &kubeconfig), ("RUST_LOG", "info")],
    );
    wait_for_line(
        &data.with_extension("log"),
        &["from ConfigMap policy, in force"],
    );
    let record = Arc::new(Mutex::new(Record::default()));
    let _probe = probe(front, &data, record.clone()).await;
    wait_blocking(&record).await;
    let before = api.requests.lock().expect("lock").clone();
    let policies: Api<IMPolicy> = Api::namespaced(cluster.client(), POLICY_NAMESPACE);
    let latencies = time_changes(&record, |block| {
        let policies = policies.clone();
        async move {
            policies
                .patch(
                    POLICY,
                    &PatchParams::apply("kubectl").force(),
                    &Patch::Apply(policy(block)),
                )
                .await
                .expect("the apply");
        }
    })
    .await;
    let after = api.requests.lock().expect("lock").clone();
    let requests = after
        .into_iter()
        .map(|(method, n)| {
            (
                method.clone(),
                n - before.get(&method).copied().unwrap_or(0),
            )
        })
        .collect();
    (latencies, requests)
}

/// The reference: a dataplane reading the policy from a file, signalled after each rewrite.
async fn through_signal(dir: &Path, prosody_port: u16, cert: &Path) -> Vec<Duration> {
    let file = dir.join("policy.yaml");
    let write = |block: bool| {
        std::fs::write(&file, serde_json::to_string(&policy(block)).expect("JSON"))
            .expect("policy file");
    };
    write(true);
    let data = dir.join("imgate-signal");
    let cert = cert.to_string_lossy();
    let policy_file = file.to_string_lossy();
    let (dataplane, front) = imgate_up_with_env(
        prosody_port,
        &data,
        &[
            "--tenant",
            TENANT,
            "--policy",
            &policy_file,
            "--policy-poll-seconds",
            "0",
            "--extra-roots",
            &cert,
            "--metrics",
            "off",
        ],
        &[],
    );
    let record = Arc::new(Mutex::new(Record::default()));
    let _probe = probe(front, &data, record.clone()).await;
    wait_blocking(&record).await;
    let pid = dataplane.0.id().to_string();
    time_changes(&record, |block| {
        write(block);
        let signalled = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(signalled, "cannot signal the dataplane");
        std::future::ready(())
    })
    .await
}

fn describe(latencies: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 9 / 10], ms[ms.len() - 1])
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (_prosody, prosody_port, cert) = prosody(dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster =
        |latency| runtime.block_on(through_cluster(dir.path(), prosody_port, &cert, latency));
    let (fast, requests) = cluster(Duration::ZERO);
    let (busy, _) = cluster(BUSY);
    let signal = runtime.block_on(through_signal(dir.path(), prosody_port, &cert));
    println!("policy change to new verdicts, {ROUNDS} changes each, messages every {INTERVAL:?}");
    println!(
        "{:<58} {:>10} {:>10} {:>10}",
        "path", "median", "p90", "max"
    );
    let busy_name = format!(
        "the same, {} ms added to each API request",
        BUSY.as_millis()
    );
    for (name, latencies) in [
        (
            "kubectl apply -> operator -> ConfigMap watch -> dataplane",
            &fast,
        ),
        (busy_name.as_str(), &busy),
        ("reference: policy file + SIGHUP", &signal),
    ] {
        let (median, p90, max) = describe(latencies);
        println!("{name:<58} {median:>8.1}ms {p90:>8.1}ms {max:>8.1}ms");
    }
    let (fast_median, _, _) = describe(&fast);
    let (signal_median, _, _) = describe(&signal);
    let (_, _, busy_max) = describe(&busy);
    println!(
        "the cluster path adds {:.1} ms to the median; the slowest change with a busy API server took {busy_max:.0} ms (goal: 2,000 ms); API requests per change: {:.1}",
        fast_median - signal_median,
        requests.values().sum::<u64>() as f64 / ROUNDS as f64
    );
}
