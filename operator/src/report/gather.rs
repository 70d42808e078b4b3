//! The operator's side of reporting: a watch on every report Lease, and the report fields of
//! each Tenant's status written from them.
//!
//! Invariants: a Tenant is looked at again when one of its Leases changes, when its delivered
//! policy revision differs from the one it was last looked at with or it was never looked at
//! (a Lease's event can come before its Tenant is in the store), and every Tenant every
//! [`SWEEP`] (reports expire without an event); a write happens only when the summary differs
//! from what was last written, or from what the Tenant's status holds before any write (the
//! watch may lag behind a write), and a change in session counts alone waits until
//! [`COUNTS_EVERY`] has passed since the Tenant's last write; a failed write is retried at the
//! next look, and every write is counted on `/metrics` by outcome; a Tenant being deleted is
//! left alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use imgate_crds::Tenant;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::summary::{Summary, current, summarize};
use super::{COMPONENT, COUNTS_EVERY, STATUS_MANAGER};
use crate::names::{self, TENANT_LABEL};
use crate::reconcile::{Context, apply_status_as};

/// How often Tenants whose Leases changed are looked at.
const TICK: Duration = Duration::from_secs(2);
/// How often every Tenant is looked at.
pub const SWEEP: Duration = Duration::from_secs(30);

/// What was last written into a Tenant's status.
struct Written {
    summary: Summary,
    at: Instant,
}

/// The report fields last written, per Tenant.
pub struct Gatherer {
    ctx: Arc<Context>,
    tenants: Store<Tenant>,
    leases: Store<Lease>,
    written: HashMap<String, Written>,
    /// The policy revision delivered to each Tenant when it was last looked at, whether or
    /// not anything was written then.
    looked: HashMap<String, Option<String>>,
}

impl Gatherer {
    /// A gatherer writing through the client of `ctx` and counting its writes in its metrics,
    /// reading Tenants and report Leases from the stores.
    pub fn new(ctx: Arc<Context>, tenants: Store<Tenant>, leases: Store<Lease>) -> Self {
        Self {
            ctx,
            tenants,
            leases,
            written: HashMap::new(),
            looked: HashMap::new(),
        }
    }

    /// The summary Tenant `name` needs written at `now`, if any.
    pub fn wanted(&self, name: &str, now: Instant) -> Option<Summary> {
        let tenant = self.tenants.get(&ObjectRef::new(name))?;
        if tenant.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let namespace = names::namespace(name);
        let leases = self.leases.state();
        let own: Vec<&Lease> = leases
            .iter()
            .filter(|l| l.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(AsRef::as_ref)
            .collect();
        let reports = current(&own, Timestamp::now());
        let status = tenant.status.clone().unwrap_or_default();
        let last = self.written.get(name);
        // The conditions last written are newer than the store's copy when the watch lags.
        let previous = match last {
            Some(written) => &written.summary.conditions,
            None => &status.conditions,
        };
        let summary = summarize(
            &reports,
            status.policy_revision.as_deref(),
            previous,
            tenant.metadata.generation,
            &Time(Timestamp::now()),
        );
        // What was last written is newer than the store's copy when the watch lags: a
        // summary back to what the store still shows must be written again.
        let stored = Summary::of_status(&status);
        let known = last.map_or(&stored, |written| &written.summary);
        if summary == *known {
            return None;
        }
        let counts_only = summary.without_counts() == known.without_counts();
        let recent = last.is_some_and(|written| now.duration_since(written.at) < COUNTS_EVERY);
        if counts_only && recent {
            return None;
        }
        Some(summary)
    }

    /// The policy revision delivered to Tenant `name`, as the store has it.
    fn delivered(&self, name: &str) -> Option<Option<String>> {
        let tenant = self.tenants.get(&ObjectRef::new(name))?;
        Some(
            tenant
                .status
                .as_ref()
                .and_then(|s| s.policy_revision.clone()),
        )
    }

    /// Writes the report fields of each of `tenants` that needs it; returns those whose write
    /// failed, to try again.
    pub async fn write(&mut self, tenants: BTreeSet<String>) -> BTreeSet<String> {
        let api: Api<Tenant> = Api::all(self.ctx.client.clone());
        let mut failed = BTreeSet::new();
        for name in tenants {
            if let Some(delivered) = self.delivered(&name) {
                self.looked.insert(name.clone(), delivered);
            }
            let Some(summary) = self.wanted(&name, Instant::now()) else {
                continue;
            };
            let result = apply_status_as(STATUS_MANAGER, &api, &name, &summary.status()).await;
            self.ctx.metrics.report_written(result.is_ok());
            match result {
                Ok(_) => {
                    let at = Instant::now();
                    self.written.insert(name, Written { summary, at });
                }
                Err(error) => {
                    tracing::warn!(tenant = %name, %error, "cannot write the dataplanes' reports into the Tenant's status; retrying");
                    failed.insert(name);
                }
            }
        }
        failed
    }

    /// The Tenants whose delivered policy revision is not the one they were last looked at
    /// with, and those never looked at (a report can come before its Tenant is in the store).
    pub fn redelivered(&self) -> BTreeSet<String> {
        self.tenants
            .state()
            .iter()
            .filter(|tenant| {
                let delivered = tenant
                    .status
                    .as_ref()
                    .and_then(|s| s.policy_revision.clone());
                self.looked.get(&tenant.name_any()) != Some(&delivered)
            })
            .map(|tenant| tenant.name_any())
            .collect()
    }

    /// Every Tenant known.
    fn all(&self) -> BTreeSet<String> {
        self.tenants.state().iter().map(|t| t.name_any()).collect()
    }
}

/// The Tenant a report Lease belongs to.
fn tenant_of(lease: &Lease) -> Option<String> {
    lease.labels().get(TENANT_LABEL).cloned()
}

/// Watches report Leases and writes Tenants' report fields, for as long as it runs.
pub async fn run(ctx: Arc<Context>, tenants: Store<Tenant>) {
    let (leases, writer) = reflector::store::<Lease>();
    let config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/component={COMPONENT}"));
    let events = watcher(Api::<Lease>::all(ctx.client.clone()), config)
        .default_backoff()
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    let mut gatherer = Gatherer::new(ctx, tenants, leases);
    let mut dirty = BTreeSet::new();
    let mut tick = tokio::time::interval(TICK);
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(lease) | watcher::Event::Delete(lease) | watcher::Event::InitApply(lease))) => {
                    dirty.extend(tenant_of(&lease));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => tracing::warn!(%error, "watching the dataplanes' report Leases; trying again"),
                None => return,
            },
            _ = tick.tick() => {
                dirty.extend(gatherer.redelivered());
                dirty = gatherer.write(std::mem::take(&mut dirty)).await;
            }
            _ = sweep.tick() => dirty.extend(gatherer.all()),
        }
    }
}
