//! Alerts for `imgate up`: a Tenant's `spec.alerts` read from a file (as the operator
//! delivers it), its Secrets read from a folder holding one folder per Secret (as Kubernetes
//! mounts them), and the outbox opened in the data folder.
//!
//! Invariants: alerts either start (a receiver whose Secret cannot be read is reported down
//! while the others run), or `imgate up` refuses to start with what to fix, except in a
//! cluster (`--report-lease`), where it runs on without alerts, archives
//! `alerts-not-started` and reports why in the Tenant's `AlertsDelivered`; the outbox is
//! opened (and holds the log) before the shipper runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use imgate_crds::alerts::AlertsSpec;
use imgate_dataplane::alerts::{AlertMetrics, Alerting, Timing, config};
use imgate_dataplane::archive::ArchiveLog;

/// What `imgate up` was told about alerts.
pub struct AlertOptions<'a> {
    /// The file holding `spec.alerts`.
    pub file: &'a Path,
    /// The folder of mounted Secrets.
    pub secrets: Option<&'a Path>,
    /// The longest wait between retries.
    pub retry_max: Duration,
    /// How long a receiver fails before it is archived as down.
    pub down_after: Duration,
}

/// The health reported, and the `system` record archived, when alerts could not start with
/// `error` (in a cluster, where the dataplane runs on without them).
pub fn unstarted(
    error: &anyhow::Error,
    (tenant, writer): (&str, &str),
    log: &ArchiveLog,
) -> imgate_dataplane::alerts::runner::Health {
    let why = format!("{error:#}");
    tracing::error!(error = %why, "alerts cannot start; the dataplane runs without them");
    let body = imgate_dataplane::archive::Body::System {
        event: "alerts-not-started".into(),
        detail: format!(
            "no alert is sent until the dataplane starts with a working spec.alerts: {why}"
        ),
    };
    let draft = imgate_dataplane::archive::Draft::new(tenant, writer, "alerts", &body);
    if let Err(error) = log.append_draft(&draft) {
        tracing::error!(%error, "cannot record that alerts did not start");
    }
    let health = imgate_dataplane::alerts::runner::ReceiverHealth {
        failing_since: Some(chrono::Utc::now()),
        error: Some(why),
        down: true,
    };
    std::sync::Arc::new(std::sync::Mutex::new(
        [("spec.alerts".to_owned(), health)].into_iter().collect(),
    ))
}

/// Reads a Tenant's `spec.alerts` from `path`.
pub fn read(path: &Path) -> anyhow::Result<AlertsSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the alerts file {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| {
        format!(
            "{} is not a Tenant's spec.alerts (groupWindow and receivers)",
            path.display()
        )
    })
}

/// Opens alerting for the log `log` in `data`, its metrics registered with `metrics`.
pub fn open(
    options: &AlertOptions<'_>,
    (tenant, writer): (&str, &str),
    data: &Path,
    log: &ArchiveLog,
    metrics: &mut imgate_dataplane::telemetry::Metrics,
) -> anyhow::Result<Alerting> {
    let spec = read(options.file)?;
    let secrets: PathBuf = options
        .secrets
        .map_or_else(|| options.file.with_file_name("secrets"), Path::to_owned);
    let settings = config::load(&spec, &secrets)
        .with_context(|| format!("the alerts in {}", options.file.display()))?;
    let alert_metrics = AlertMetrics::default();
    alert_metrics.register(metrics.registry_mut());
    let timing = Timing {
        retry_max: options.retry_max,
        down_after: options.down_after,
        ..Timing::default()
    };
    Alerting::open(
        settings,
        (tenant, writer),
        &data.join("alerts"),
        log.clone(),
        alert_metrics,
        timing,
    )
    .context("cannot start alerts")
}
