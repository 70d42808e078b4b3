//! `imgate operator run`: the operator as its Deployment runs it. It serves `/metrics` and
//! `/healthz` at once, waits for the leader Lease, and reconciles while it holds it.
//!
//! Invariants: only the replica holding the Lease writes to the API server; losing the Lease
//! (taken, or not renewed through an API server outage) stops reconciling at once and the
//! replica waits to lead again in the same process, rather than letting two replicas
//! reconcile or restarting every replica whenever the control plane does; SIGTERM lets
//! reconciles in flight finish, then releases the Lease so another replica leads at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use imgate_operator::reconcile::leader::{self, LeaseLock};
use imgate_operator::reconcile::{self, Context, Metrics};

use crate::operator::SettingsArgs;

/// The Lease the operator's replicas elect a leader on.
const LEASE: &str = "imgate-operator";
/// How long a leader holds the Lease without renewing it.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// Options of `imgate operator run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Where to serve `/metrics` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics: SocketAddr,
    /// The namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "imgate-system")]
    lease_namespace: String,
    /// This replica's name in the Lease and in Events (its pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// Runs the operator until SIGTERM; returns the exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    args.settings.require_api_server()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(operate(args))
}

async fn operate(args: &RunArgs) -> anyhow::Result<i32> {
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API server: run the operator in a pod with its service account, or set KUBECONFIG",
    )?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("imgate-operator-{}", std::process::id()));
    let ctx = Arc::new(Context::new(
        client.clone(),
        args.settings.settings(),
        Some(identity.clone()),
    ));
    let listener = tokio::net::TcpListener::bind(args.metrics)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics))?;
    tokio::spawn(serve_metrics(listener, ctx.clone()));
    let lock = LeaseLock::new(
        client,
        &args.lease_namespace,
        LEASE,
        &identity,
        LEASE_DURATION,
    );
    tracing::info!(identity, lease = %format!("{}/{LEASE}", args.lease_namespace), "waiting to lead");
    leader::run(&lock, &ctx.metrics, crate::up::shutdown_signal(), |stop| {
        reconcile::run(ctx.clone(), stop)
    })
    .await;
    Ok(0)
}

/// Serves `/metrics` (Prometheus text format) and `/healthz`.
async fn serve_metrics(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let metrics = move || {
        let ctx = ctx.clone();
        async move { render(&ctx.metrics) }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

fn render(metrics: &Metrics) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
