//! Dataplane reports: what each running dataplane tells the operator about itself, and how
//! the operator turns those reports into the Tenant's status.
//!
//! Each dataplane keeps a Lease named after its pod in the tenant's namespace ([`lease`]), the
//! heartbeat convention of Kubernetes: `spec.renewTime` says it is alive, and the annotation
//! [`REPORT`] carries a [`Report`] as JSON (the policy revision it enforces, the sessions it
//! proxies, the connectors connected to it, its archive shipping and its alert receivers). The operator watches
//! those Leases ([`gather`]) and writes the report fields of each Tenant's status
//! ([`summary`]) with a field manager of its own, so they never clash with the fields its
//! reconciles own.
//!
//! Invariants:
//! - A report counts only while its Lease is current (`renewTime` plus `leaseDurationSeconds`
//!   is in the future): a dataplane that died without a word drops out of the status.
//! - Writes are bounded on both sides. A dataplane renews its Lease at once when what it
//!   enforces, who is connected or whether its archive ships changes, and otherwise every
//!   [`HEARTBEAT`]; the operator writes a Tenant's report fields only when they changed, and
//!   changes in session counts alone at most every [`COUNTS_EVERY`].
//! - A Lease belongs to its pod (an owner reference), so it is deleted with the pod.

pub mod gather;
pub mod lease;
pub mod summary;
#[cfg(test)]
mod tests;

use std::time::Duration;

use std::collections::BTreeMap;

use imgate_dataplane::alerts::runner::ReceiverHealth;
use imgate_dataplane::archive::ShipHealth;
use serde::{Deserialize, Serialize};

/// The annotation of a report Lease holding the [`Report`] as JSON.
pub const REPORT: &str = "imgate.io/report";
/// The `app.kubernetes.io/component` label of report Leases.
pub const COMPONENT: &str = "dataplane-report";
/// The field manager of the dataplanes' Lease writes.
pub const DATAPLANE_MANAGER: &str = "imgate-dataplane";
/// The field manager of the operator's writes of report fields in Tenant status.
pub const STATUS_MANAGER: &str = "imgate-operator-reports";
/// How long a report counts without renewal.
pub const LEASE_SECONDS: i32 = 90;
/// How often a dataplane renews its Lease when nothing significant changed.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often the operator writes a Tenant's session counts when only they changed.
pub const COUNTS_EVERY: Duration = Duration::from_secs(60);

/// What a dataplane reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The revision of the policy set it enforces (none before the first delivered one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// IM sessions it proxies now.
    pub active_sessions: u64,
    /// Connectors with a tunnel connection to it, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connectors: Vec<String>,
    /// Its archive shipping.
    pub archive: ShipHealth,
    /// Its alert receivers' health, by receiver, when it has alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<BTreeMap<String, ReceiverHealth>>,
}

impl Report {
    /// Whether `other` differs from this report in what must be told at once: the policy
    /// revision, the connectors, whether the archive ships (not when it last did), or which
    /// alert receivers fail.
    pub fn differs_significantly(&self, other: &Report) -> bool {
        self.policy_revision != other.policy_revision
            || self.connectors != other.connectors
            || std::mem::discriminant(&self.archive) != std::mem::discriminant(&other.archive)
            || failing(&self.alerts) != failing(&other.alerts)
    }
}

/// The receivers down in `alerts` (failing for longer than the dataplane's `down_after`).
fn failing(alerts: &Option<BTreeMap<String, ReceiverHealth>>) -> Vec<&str> {
    alerts
        .iter()
        .flatten()
        .filter(|(_, health)| health.down)
        .map(|(name, _)| name.as_str())
        .collect()
}
