//! Reconcile cost: how long the operator takes, and how much memory it holds, to converge
//! `CONVERGE_TENANTS` tenants (default 1,000), each with one policy, against an in-memory API
//! server over HTTP (`imgate_fake_api`). The reference, in the same run, is the same operator
//! watching the same server with no tenant at all: the memory figures are reported beside it.
//!
//! The operator runs in a child process (this binary again, with `CONVERGE_OPERATOR_URL`), so
//! its memory is its own and not the fake server's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgate_fake_api::FakeApi;
use imgate_operator::Settings;
use imgate_operator::reconcile::{self, Context};
use serde_json::Value;

/// How long convergence may take before the run is declared failed.
const LIMIT: Duration = Duration::from_secs(900);

fn example(path: &str) -> Value {
    let text =
        std::fs::read_to_string(format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("example");
    serde_saphyr::from_str(&text).expect("an example object")
}

/// A server holding `n` tenants like the small firm of the examples, each with its policy.
fn populated(n: usize) -> FakeApi {
    let api = FakeApi::new();
    let tenant = example("small-firm/tenant.yaml");
    let policy = example("small-firm/policy.yaml");
    for i in 0..n {
        let name = format!("firm-{i:04}");
        let mut tenant = tenant.clone();
        tenant["metadata"]["name"] = name.clone().into();
        api.insert("tenants", tenant);
        let mut policy = policy.clone();
        policy["metadata"]["namespace"] = name.clone().into();
        policy["spec"]["tenantRef"] = name.into();
        api.insert("impolicies", policy);
    }
    api
}

fn ready(tenant: &Value) -> bool {
    tenant["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// `VmHWM` (peak) and `VmRSS` of process `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Figures {
    tenants: usize,
    converged: Duration,
    cpu: f64,
    peak_kib: u64,
    idle_kib: u64,
    requests: std::collections::BTreeMap<String, u64>,
}

async fn measure(n: usize) -> Figures {
    let api = populated(n);
    let url = api.serve().await.expect("a port");
    let mut child = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env("CONVERGE_OPERATOR_URL", &url)
        .env("RUST_LOG", "error")
        .spawn()
        .expect("the operator starts");
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = api.all("tenants").iter().filter(|t| ready(t)).count();
        if done == n && (n > 0 || start.elapsed() > Duration::from_secs(3)) {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{done} of {n} tenants ready after {LIMIT:?}"
        );
    }
    let converged = start.elapsed();
    let cpu = cpu_seconds(child.id());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (peak_kib, idle_kib) = memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let requests = api.requests.lock().expect("lock").clone();
    Figures {
        tenants: n,
        converged,
        cpu,
        peak_kib,
        idle_kib,
        requests,
    }
}

fn operator(url: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let config = kube::Config::new(url.parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let ctx = Arc::new(Context::new(
            client,
            Settings::default(),
            Some("bench".into()),
        ));
        reconcile::run(ctx, std::future::pending()).await;
    });
}

fn main() {
    if let Ok(url) = std::env::var("CONVERGE_OPERATOR_URL") {
        operator(&url);
        return;
    }
    let n = std::env::var("CONVERGE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (reference, loaded) = runtime.block_on(async { (measure(0).await, measure(n).await) });
    println!("operator convergence against an in-memory API server over HTTP");
    println!(
        "{:>8} {:>12} {:>9} {:>12} {:>12} {:>30}",
        "tenants", "converged", "CPU s", "peak RSS", "idle RSS", "requests"
    );
    for f in [&reference, &loaded] {
        println!(
            "{:>8} {:>11.2}s {:>9.2} {:>9} KiB {:>8} KiB {:>30}",
            f.tenants,
            if f.tenants == 0 {
                0.0
            } else {
                f.converged.as_secs_f64()
            },
            f.cpu,
            f.peak_kib,
            f.idle_kib,
            format!("{:?}", f.requests)
        );
    }
    if n > 0 {
        let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / n as f64;
        println!(
            "per tenant: {:.1} ms of convergence, {:.1} ms CPU, {:.1} KiB peak and {:.1} KiB idle above the no-tenant reference, {:.1} requests",
            loaded.converged.as_secs_f64() * 1000.0 / n as f64,
            loaded.cpu * 1000.0 / n as f64,
            per(loaded.peak_kib, reference.peak_kib),
            per(loaded.idle_kib, reference.idle_kib),
            loaded.requests.values().sum::<u64>() as f64 / n as f64,
        );
    }
}
