//! `imgate up --report-lease`: what this dataplane reports to the operator (the policy
//! revision it enforces, its open sessions, the connectors connected to it and its archive
//! shipping), read from its running parts and kept in a Lease of its pod's namespace.
//!
//! Invariants: reading a report takes no lock a session holds for longer than a copy; the
//! report is looked at every [`EVERY`], and written only when due
//! ([`imgate_operator::report::lease`]); on stop the Lease is withdrawn before the archive's
//! final flush, so the pod leaves the Tenant's status as it drains.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgate_dataplane::archive::ShipMonitor;
use imgate_dataplane::proxy::shared::Shared;
use imgate_dataplane::tunnel::listener::Tunnel;
use imgate_operator::report::Report;
use imgate_operator::report::lease::{self, LeaseReporter};

/// How often the report is looked at.
const EVERY: Duration = Duration::from_secs(2);

/// Where a report's parts come from.
pub struct Sources {
    /// Sessions open now.
    pub shared: Arc<Shared>,
    /// Connectors connected, when the tunnel is on.
    pub tunnel: Option<Arc<Tunnel>>,
    /// Archive shipping.
    pub archive: Arc<ShipMonitor>,
    /// The revision of the delivered policy set in force.
    pub revision: Arc<Mutex<Option<String>>>,
    /// The alert receivers' health, when alerts are on.
    pub alerts: Option<imgate_dataplane::alerts::runner::Health>,
}

impl Sources {
    /// The report as things stand.
    pub fn read(&self) -> Report {
        Report {
            policy_revision: self
                .revision
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            active_sessions: self.shared.metrics.active_sessions(),
            connectors: self
                .tunnel
                .as_ref()
                .map(|tunnel| tunnel.connectors())
                .unwrap_or_default(),
            archive: self.archive.get(),
            alerts: self.alerts.as_ref().map(|health| {
                health
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            }),
        }
    }
}

/// Reports from `sources` into Lease `name` (pod `pod_uid`'s) of the client's namespace until
/// the returned notification is sent; the task ends once the Lease is withdrawn.
pub fn spawn(
    client: kube::Client,
    name: &str,
    pod_uid: Option<String>,
    tenant: &str,
    sources: Sources,
) -> (tokio::task::JoinHandle<()>, Arc<tokio::sync::Notify>) {
    let reporter = LeaseReporter::new(kube::Api::default_namespaced(client), name, pod_uid, tenant);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(lease::run(
        reporter,
        EVERY,
        move || sources.read(),
        async move { stopped.notified().await },
    ));
    (task, stop)
}
