//! The operator's side of reporting: a watch on every report Lease, and the report fields of
//! each Tenant's status written from them.
//!
//! Invariants: a Tenant is looked at again when one of its Leases changes, and every Tenant
//! every [`SWEEP`] (reports expire without an event); a write happens only when the summary
//! differs from both what the Tenant's status holds and what was last written (the watch may
//! lag), and a change in session counts alone waits until [`COUNTS_EVERY`] has passed since
//! the Tenant's last write; a failed write is retried at the next look; a Tenant being deleted
//! is left alone.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use imgate_crds::Tenant;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::summary::{Summary, current, summarize};
use super::{COMPONENT, COUNTS_EVERY, STATUS_MANAGER};
use crate::names::{self, TENANT_LABEL};
use crate::reconcile::apply_status_as;

/// How often Tenants whose Leases changed are looked at.
const TICK: Duration = Duration::from_secs(2);
/// How often every Tenant is looked at.
pub const SWEEP: Duration = Duration::from_secs(30);

/// The report fields last written, per Tenant.
pub struct Gatherer {
    client: Client,
    tenants: Store<Tenant>,
    leases: Store<Lease>,
    written: HashMap<String, (Summary, Instant)>,
}

impl Gatherer {
    /// A gatherer writing through `client`, reading Tenants and report Leases from the stores.
    pub fn new(client: Client, tenants: Store<Tenant>, leases: Store<Lease>) -> Self {
        Self {
            client,
            tenants,
            leases,
            written: HashMap::new(),
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
        // The condition last written is newer than the store's copy when the watch lags.
        let previous = match last.and_then(|(written, _)| written.archive.clone()) {
            Some(condition) => vec![condition],
            None => status.conditions.clone(),
        };
        let summary = summarize(
            &reports,
            &previous,
            tenant.metadata.generation,
            &Time(Timestamp::now()),
        );
        let stored = Summary::of_status(&status);
        if summary == stored || last.is_some_and(|(written, _)| *written == summary) {
            return None;
        }
        let known = last.map_or(&stored, |(written, _)| written);
        let counts_only = summary.without_counts() == known.without_counts();
        let recent = last.is_some_and(|(_, at)| now.duration_since(*at) < COUNTS_EVERY);
        if counts_only && recent {
            return None;
        }
        Some(summary)
    }

    /// Writes the report fields of each of `tenants` that needs it; returns those whose write
    /// failed, to try again.
    pub async fn write(&mut self, tenants: BTreeSet<String>) -> BTreeSet<String> {
        let api: Api<Tenant> = Api::all(self.client.clone());
        let mut failed = BTreeSet::new();
        for name in tenants {
            let Some(summary) = self.wanted(&name, Instant::now()) else {
                continue;
            };
            match apply_status_as(STATUS_MANAGER, &api, &name, &summary.status()).await {
                Ok(_) => {
                    self.written.insert(name, (summary, Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(tenant = %name, %error, "cannot write the dataplanes' reports into the Tenant's status; retrying");
                    failed.insert(name);
                }
            }
        }
        failed
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
pub async fn run(client: Client, tenants: Store<Tenant>) {
    let (leases, writer) = reflector::store::<Lease>();
    let config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/component={COMPONENT}"));
    let events = watcher(Api::<Lease>::all(client.clone()), config)
        .default_backoff()
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    let mut gatherer = Gatherer::new(client, tenants, leases);
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
                dirty = gatherer.write(std::mem::take(&mut dirty)).await;
            }
            _ = sweep.tick() => dirty.extend(gatherer.all()),
        }
    }
}
