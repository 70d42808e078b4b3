//! The report fields of a Tenant's status, as a pure function of its dataplanes' report
//! Leases and the policy revision delivered: `dataplanes`, `connectors`, `activeSessions`, and
//! the `ArchiveReachable`, `PolicyEnforced` and `AlertsDelivered` conditions.
//!
//! Invariants: only current Leases count (renewed within their duration); a Lease whose report
//! does not parse is left out, never guessed at; `connectors` counts distinct connector ids
//! (a connector keeps connections to several dataplanes); `ArchiveReachable` is `False` when
//! any dataplane's shipping or probe of the store fails, `True` when some shipped or found the
//! store answering and none fails, and `Unknown` otherwise; `PolicyEnforced` is `True` when every reporting dataplane enforces the delivered
//! revision, `False` naming those that do not, and `Unknown` without reports or a delivered
//! revision; `AlertsDelivered` is `False` naming each failing receiver of each dataplane,
//! `True` when receivers are configured and none fails, and `Unknown` without reports or
//! receivers; the fields come out in pod order, so equal reports give an equal summary.

use imgate_crds::TenantStatus;
use imgate_crds::tenant::DataplaneReport;
use imgate_dataplane::archive::ShipHealth;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{REPORT, Report};
use crate::reconcile::conditions::{State, Wanted, find, merge};

/// Whether the tenant's records reach its bucket, as the reports show.
pub const ARCHIVE_REACHABLE: &str = "ArchiveReachable";
/// Whether every dataplane enforces the policy revision delivered.
pub const POLICY_ENFORCED: &str = "PolicyEnforced";
/// Whether the tenant's alert receivers take its alerts.
pub const ALERTS_DELIVERED: &str = "AlertsDelivered";

/// The report fields of a Tenant's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Each current dataplane's report, by pod name.
    pub dataplanes: Vec<DataplaneReport>,
    /// Distinct connectors connected.
    pub connectors: i32,
    /// Sessions proxied, over all dataplanes.
    pub active_sessions: i32,
    /// `ArchiveReachable` and `PolicyEnforced`.
    pub conditions: Vec<Condition>,
}

/// The reports among `leases` that are current at `now`, by pod name.
pub fn current(leases: &[&Lease], now: Timestamp) -> Vec<(String, Report)> {
    let mut reports: Vec<(String, Report)> = leases
        .iter()
        .filter(|lease| {
            let spec = lease.spec.as_ref();
            let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
            let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
            renewed.is_some_and(|at| {
                at.checked_add(SignedDuration::from_secs(seconds.into()))
                    .is_ok_and(|until| until > now)
            })
        })
        .filter_map(|lease| {
            let name = lease.metadata.name.clone()?;
            let text = lease.metadata.annotations.as_ref()?.get(REPORT)?;
            let report = serde_json::from_str(text).ok()?;
            Some((name, report))
        })
        .collect();
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    reports
}

fn archive_state(health: &ShipHealth) -> &'static str {
    match health {
        ShipHealth::NothingShipped => "NothingShipped",
        ShipHealth::Shipped { .. } => "Shipped",
        ShipHealth::Reachable { .. } => "Reachable",
        ShipHealth::Failing { .. } => "Failing",
    }
}

/// `ArchiveReachable` as `reports` show it.
fn archive(reports: &[(String, Report)]) -> Wanted {
    let condition = |state, reason, message| Wanted::new(ARCHIVE_REACHABLE, state, reason, message);
    let failing: Vec<String> = reports
        .iter()
        .filter_map(|(pod, report)| match &report.archive {
            ShipHealth::Failing { since, error } => {
                Some(format!("{pod}: {error} (failing since {since})"))
            }
            _ => None,
        })
        .collect();
    if !failing.is_empty() {
        let message = format!(
            "archive shipping fails, records wait in the dataplanes' logs: {}; check the bucket, its credentials and the network policy's egress",
            failing.join("; ")
        );
        return condition(State::False, "ShippingFailing", message);
    }
    if reports
        .iter()
        .any(|(_, r)| matches!(r.archive, ShipHealth::Shipped { .. }))
    {
        let message = "the dataplanes ship their archive segments to the object store".into();
        return condition(State::True, "Shipping", message);
    }
    if reports
        .iter()
        .any(|(_, r)| matches!(r.archive, ShipHealth::Reachable { .. }))
    {
        let message =
            "the object store answers the dataplanes; no records were due to ship yet".into();
        return condition(State::True, "Reachable", message);
    }
    if reports.is_empty() {
        let message = "no dataplane of this tenant reports: none is running, or they cannot reach the API server (see their logs)".into();
        return condition(State::Unknown, "NoReports", message);
    }
    let message = "no records were due to ship since the dataplanes started".into();
    condition(State::Unknown, "NothingShippedYet", message)
}

/// `AlertsDelivered` as `reports` show it.
fn alerts(reports: &[(String, Report)]) -> Wanted {
    let condition = |state, reason, message| Wanted::new(ALERTS_DELIVERED, state, reason, message);
    if reports.is_empty() {
        let message = "no dataplane of this tenant reports: none is running, or they cannot reach the API server (see their logs)".into();
        return condition(State::Unknown, "NoReports", message);
    }
    let mut receivers: Vec<&str> = reports
        .iter()
        .flat_map(|(_, r)| r.alerts.iter().flatten().map(|(name, _)| name.as_str()))
        .collect();
    receivers.sort_unstable();
    receivers.dedup();
    if receivers.is_empty() {
        let message = "spec.alerts names no receivers: rule matches are in the archive only".into();
        return condition(State::Unknown, "NotConfigured", message);
    }
    let failing: Vec<String> = reports
        .iter()
        .flat_map(|(pod, report)| {
            report
                .alerts
                .iter()
                .flatten()
                .filter_map(move |(name, health)| {
                    let since = health.failing_since.filter(|_| health.down)?;
                    let error = health.error.as_deref().unwrap_or("no detail");
                    Some(format!("{pod}: {name}: {error} (failing since {since})"))
                })
        })
        .collect();
    if !failing.is_empty() {
        let message = format!(
            "alerts wait in the dataplanes' outboxes and are sent once their receivers take them: {}; check the receiver, its credentials and the network policy's egress",
            failing.join("; ")
        );
        return condition(State::False, "ReceiverFailing", message);
    }
    let message = format!(
        "every dataplane delivers to its receivers ({})",
        receivers.join(", ")
    );
    condition(State::True, "Delivering", message)
}

/// `PolicyEnforced` as `reports` show it, when revision `delivered` is the one delivered.
fn enforced(reports: &[(String, Report)], delivered: Option<&str>) -> Wanted {
    let condition = |state, reason, message| Wanted::new(POLICY_ENFORCED, state, reason, message);
    if reports.is_empty() {
        let message = "no dataplane of this tenant reports: none is running, or they cannot reach the API server (see their logs)".into();
        return condition(State::Unknown, "NoReports", message);
    }
    let Some(delivered) = delivered else {
        let message = "no policy set has been delivered yet (see PolicyApplied)".into();
        return condition(State::Unknown, "NothingDelivered", message);
    };
    let behind: Vec<String> = reports
        .iter()
        .filter(|(_, report)| report.policy_revision.as_deref() != Some(delivered))
        .map(|(pod, report)| match &report.policy_revision {
            Some(revision) => format!("{pod} enforces {revision}"),
            None => format!("{pod} enforces none delivered yet"),
        })
        .collect();
    if behind.is_empty() {
        let message = format!(
            "every dataplane ({}) enforces revision {delivered}",
            reports.len()
        );
        return condition(State::True, "Enforced", message);
    }
    let message = format!(
        "revision {delivered} is delivered, but {}; a dataplane that refused it says why in its log",
        behind.join(", ")
    );
    condition(State::False, "NotEnforced", message)
}

/// The summary of `reports` when revision `delivered` is the one delivered, its conditions for
/// `generation` with their transition times kept from `previous` when their status is
/// unchanged.
pub fn summarize(
    reports: &[(String, Report)],
    delivered: Option<&str>,
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> Summary {
    let mut connectors: Vec<&str> = reports
        .iter()
        .flat_map(|(_, r)| r.connectors.iter().map(String::as_str))
        .collect();
    connectors.sort_unstable();
    connectors.dedup();
    let sessions: u64 = reports.iter().map(|(_, r)| r.active_sessions).sum();
    let wanted = vec![
        archive(reports),
        enforced(reports, delivered),
        alerts(reports),
    ];
    let conditions = merge(previous, wanted, generation, now);
    Summary {
        dataplanes: reports
            .iter()
            .map(|(pod, report)| DataplaneReport {
                name: pod.clone(),
                policy_revision: report.policy_revision.clone(),
                active_sessions: i64::try_from(report.active_sessions).unwrap_or(i64::MAX),
                connectors: report.connectors.clone(),
                archive: archive_state(&report.archive).into(),
            })
            .collect(),
        connectors: i32::try_from(connectors.len()).unwrap_or(i32::MAX),
        active_sessions: i32::try_from(sessions).unwrap_or(i32::MAX),
        conditions,
    }
}

impl Summary {
    /// The report fields as `status` holds them.
    pub fn of_status(status: &TenantStatus) -> Self {
        Self {
            dataplanes: status.dataplanes.clone(),
            connectors: status.connectors.unwrap_or(0),
            active_sessions: status.active_sessions.unwrap_or(0),
            conditions: [ARCHIVE_REACHABLE, POLICY_ENFORCED, ALERTS_DELIVERED]
                .into_iter()
                .filter_map(|type_| find(&status.conditions, type_).cloned())
                .collect(),
        }
    }

    /// This summary with the session counts left out.
    pub fn without_counts(&self) -> Self {
        let mut summary = self.clone();
        summary.active_sessions = 0;
        for dataplane in &mut summary.dataplanes {
            dataplane.active_sessions = 0;
        }
        summary
    }

    /// The status fields the operator's report writes own.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "dataplanes": self.dataplanes,
            "connectors": self.connectors,
            "activeSessions": self.active_sessions,
            "conditions": self.conditions,
        })
    }
}
