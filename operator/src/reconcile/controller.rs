//! The Tenant controller: what triggers a Tenant's reconcile, and what happens when one
//! fails.
//!
//! Invariants: a Tenant is reconciled when its spec changes or its deletion begins (both bump
//! its `generation`; status writes, the operator's own and the dataplane reports', do not),
//! when any IMPolicy naming it changes or goes, when any object the operator made for it
//! changes (drift is undone within one reconcile), and when its enrollment Secret changes (a
//! dataplane redeemed the token, or someone deleted it for a new one: the Tenant's
//! `ConnectorEnrollment` says so at once, not at the next resync); objects are mapped to their Tenant by the tenant label, which every
//! operator-made object carries, since owner references cannot name a cluster-scoped owner
//! from a namespaced object in a way the controller's store resolves; only objects labelled
//! as managed by the operator are watched, and of Secrets only the enrollment Secrets, by
//! name and as metadata (their tokens never reach the operator).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use imgate_crds::{IMPolicy, Tenant};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, reconcile};
use crate::names::{ENROLLMENT_SECRET, FIELD_MANAGER, TENANT_LABEL};
use crate::report;

/// The delay before a reconcile that lost a race (`409 Conflict`) runs again.
const AFTER_CONFLICT: Duration = Duration::from_secs(1);
/// The delay before any other failed reconcile runs again, the first time.
const AFTER_ERROR: Duration = Duration::from_secs(15);
/// The longest delay before a failed reconcile runs again.
const MOST_AFTER_ERROR: Duration = Duration::from_secs(300);
/// The most Tenants reconciled at once: bounds the operator's memory, its connections and
/// its load on the API server, whatever the number of tenants.
const CONCURRENCY: u16 = 16;

/// The Tenant that `object` belongs to, by its tenant label.
pub fn tenant_of<K: Resource>(object: &K) -> Option<ObjectRef<Tenant>> {
    object
        .meta()
        .labels
        .as_ref()?
        .get(TENANT_LABEL)
        .map(|tenant| ObjectRef::new(tenant))
}

/// The Tenant that `policy` names.
pub fn tenant_of_policy(policy: &IMPolicy) -> ObjectRef<Tenant> {
    ObjectRef::new(&policy.spec.tenant_ref)
}

/// When a failed reconcile runs again: soon after a lost race, otherwise after a delay that
/// doubles with each failure in a row, from [`AFTER_ERROR`] up to [`MOST_AFTER_ERROR`], so
/// that a Tenant whose objects the API server refuses does not rewrite them all every few
/// seconds for as long as nobody fixes it.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, Error::Api { source: kube::Error::Api(status), .. } if status.is_conflict());
    let delay = if conflict {
        AFTER_CONFLICT
    } else {
        let mut failures = ctx
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let row = failures.entry(tenant.name_any()).or_insert(0);
        *row = row.saturating_add(1);
        AFTER_ERROR
            .saturating_mul(1 << (*row - 1).min(8))
            .min(MOST_AFTER_ERROR)
    };
    tracing::debug!(tenant = %tenant.name_any(), ?delay, "reconcile retried");
    Action::requeue(delay)
}

/// Runs the Tenant controller, and the gathering of dataplane reports into Tenant status,
/// until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let (tenants, writer) = reflector::store::<Tenant>();
    let changed = watcher(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(predicates::generation, PredicateConfig::default());
    // Aborted however `run` ends: when it returns, and when it is dropped mid-way (a leader
    // that lost its Lease stops at once).
    let _gathering = AbortOnDrop(tokio::spawn(report::gather::run(
        ctx.clone(),
        tenants.clone(),
    )));
    Controller::for_stream(changed, tenants)
        .watches(
            Api::<IMPolicy>::all(client.clone()),
            watcher::Config::default(),
            |policy| Some(tenant_of_policy(&policy)),
        )
        .watches(
            Api::<StatefulSet>::all(client.clone()),
            managed.clone(),
            |object| tenant_of(&object),
        )
        .watches(
            Api::<Service>::all(client.clone()),
            managed.clone(),
            |object| tenant_of(&object),
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            managed.clone(),
            |object| tenant_of(&object),
        )
        .watches(
            Api::<PartialObjectMeta<Secret>>::all(client),
            managed.fields(&format!("metadata.name={ENROLLMENT_SECRET}")),
            |secret| tenant_of(&secret),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
}

/// A spawned task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
