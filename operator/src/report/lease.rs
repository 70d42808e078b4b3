//! The dataplane's side of reporting: its [`Report`] kept in a Lease named after its pod.
//!
//! Invariants: a Lease is written by server-side apply with the dataplanes' field manager, so
//! one request creates or renews it and no read comes first; a write is due when the report
//! differs significantly from the one last written, or [`HEARTBEAT`] after it; a failed write
//! is logged once until one succeeds again, and retried at the next look; on stop the Lease is
//! deleted, so that the pod leaves the Tenant's status at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

use super::{COMPONENT, DATAPLANE_MANAGER, HEARTBEAT, LEASE_SECONDS, REPORT, Report};
use crate::names::TENANT_LABEL;

/// Why a report was not written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The API server refused or failed the write.
    #[error("cannot write report Lease {name}: {source}")]
    Write {
        /// The Lease.
        name: String,
        /// The API server's answer.
        source: kube::Error,
    },
}

/// One dataplane's report Lease.
pub struct LeaseReporter {
    leases: Api<Lease>,
    pod: String,
    tenant: String,
    pod_uid: Option<String>,
    written: Option<(Report, Instant)>,
}

/// Whether `report` must be written at `now`, when `written` was last written.
pub fn due(written: Option<&(Report, Instant)>, report: &Report, now: Instant) -> bool {
    written.is_none_or(|(last, at)| {
        last.differs_significantly(report) || now.duration_since(*at) >= HEARTBEAT
    })
}

/// The Lease of pod `pod` (with UID `pod_uid`, when known) of `tenant` that carries `report`,
/// renewed `now`.
pub fn lease(
    pod: &str,
    pod_uid: Option<&str>,
    tenant: &str,
    report: &Report,
    now: Timestamp,
) -> Lease {
    let labels = [
        ("app.kubernetes.io/name", "imgate"),
        ("app.kubernetes.io/component", COMPONENT),
        ("app.kubernetes.io/managed-by", DATAPLANE_MANAGER),
        (TENANT_LABEL, tenant),
    ];
    let text = serde_json::to_string(report)
        .unwrap_or_else(|error| unreachable!("a report always serializes: {error}"));
    Lease {
        metadata: ObjectMeta {
            name: Some(pod.to_owned()),
            labels: Some(
                labels
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            annotations: Some([(REPORT.to_owned(), text)].into()),
            owner_references: pod_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: pod.to_owned(),
                    uid: uid.to_owned(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(pod.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

impl LeaseReporter {
    /// The reporter of pod `pod` (whose UID, when known, makes the Lease the pod's) of
    /// `tenant`, writing to `leases` (the pod's namespace).
    pub fn new(leases: Api<Lease>, pod: &str, pod_uid: Option<String>, tenant: &str) -> Self {
        Self {
            leases,
            pod: pod.to_owned(),
            tenant: tenant.to_owned(),
            pod_uid,
            written: None,
        }
    }

    /// Writes `report` when one is due at `now`; returns whether it wrote.
    pub async fn report(&mut self, report: Report, now: Instant) -> Result<bool, ReportError> {
        if !due(self.written.as_ref(), &report, now) {
            return Ok(false);
        }
        let lease = lease(
            &self.pod,
            self.pod_uid.as_deref(),
            &self.tenant,
            &report,
            Timestamp::now(),
        );
        self.leases
            .patch(
                &self.pod,
                &PatchParams::apply(DATAPLANE_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|source| ReportError::Write {
                name: self.pod.clone(),
                source,
            })?;
        self.written = Some((report, now));
        Ok(true)
    }

    /// Deletes the Lease (this dataplane stops reporting); a Lease already gone is no error.
    pub async fn withdraw(&self) -> Result<(), ReportError> {
        match self
            .leases
            .delete(&self.pod, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(source) => Err(ReportError::Write {
                name: self.pod.clone(),
                source,
            }),
        }
    }
}

/// Reports what `read` returns every `every` until `stop` resolves, then withdraws.
pub async fn run(
    mut reporter: LeaseReporter,
    every: Duration,
    read: impl Fn() -> Report,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut failing = false;
    loop {
        match reporter.report(read(), Instant::now()).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("reporting to the operator again");
            }
            Ok(_) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    "{error}; the Tenant's status shows this dataplane's last report until it expires; retrying"
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    if let Err(error) = reporter.withdraw().await {
        tracing::warn!("{error}; it expires by itself");
    }
}
