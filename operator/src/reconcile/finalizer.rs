//! The Tenant's finalizer: added on its first reconcile, removed only after its dataplanes
//! have flushed and stopped.
//!
//! Invariants: the finalizer list is written with the `resourceVersion` it was read at, so
//! a concurrent change makes the write fail (`409 Conflict`) and the reconcile retries on
//! fresh data instead of dropping another controller's finalizer; while a Tenant is being
//! deleted its autoscaler is removed first (it would scale the dataplanes back up), the
//! StatefulSet is scaled to zero, and the finalizer stays while any dataplane pod exists;
//! the tenant's namespace and the write-ahead-log volumes in it outlive the Tenant (the
//! namespace names no owner), so a log a dataplane could not ship is never lost with it.

use std::time::Duration;

use imgate_crds::Tenant;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::{Context, Error, FINALIZER, api, status, write_tenant_status};
use crate::names::{self, DATAPLANE};

/// How often a draining Tenant is looked at again.
pub const DRAIN_POLL: Duration = Duration::from_secs(10);

fn has(tenant: &Tenant) -> bool {
    tenant.finalizers().iter().any(|f| f == FINALIZER)
}

/// Writes `finalizers` on `tenant`, on condition that it is unchanged since read.
async fn write(tenant: &Tenant, finalizers: Vec<String>, ctx: &Context) -> Result<(), Error> {
    let tenants: Api<Tenant> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": tenant.resource_version(),
        }
    });
    tenants
        .patch(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(api("finalizer", format!("Tenant/{}", tenant.name_any())))?;
    Ok(())
}

/// Adds the finalizer to `tenant` unless it has it.
pub async fn ensure(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    if has(tenant) {
        return Ok(());
    }
    let mut finalizers = tenant.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    write(tenant, finalizers, ctx).await
}

/// Scales a deleted `tenant`'s dataplanes to zero; lets the Tenant go once none is left.
pub async fn drain(tenant: &Tenant, ctx: &Context, now: &Time) -> Result<Action, Error> {
    if !has(tenant) {
        return Ok(Action::await_change());
    }
    let name = tenant.name_any();
    let namespace = names::namespace(&name);
    let client = ctx.client.clone();
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    match autoscalers
        .delete(DATAPLANE, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => return Err(api("delete", "HorizontalPodAutoscaler/dataplane")(error)),
    }
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let zero = serde_json::json!({"spec": {"replicas": 0}});
    match stateful_sets
        .patch(DATAPLANE, &PatchParams::default(), &Patch::Merge(zero))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => return Err(api("scale", "StatefulSet/dataplane")(error)),
    }
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let selector = names::selector_query(&name);
    let remaining = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(api("list", format!("dataplane pods of {name}")))?
        .items
        .len();
    if remaining > 0 {
        let previous = tenant.status.clone().unwrap_or_default();
        let generation = tenant.meta().generation;
        let draining =
            status::draining_status(&previous, generation, &namespace, remaining as i64, now);
        write_tenant_status(tenant, draining, ctx).await?;
        tracing::info!(tenant = %name, remaining, "waiting for the dataplanes to flush and stop");
        return Ok(Action::requeue(DRAIN_POLL));
    }
    let kept = tenant
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    write(tenant, kept, ctx).await?;
    tracing::info!(
        tenant = %name,
        "dataplanes stopped; the Tenant's objects go; its archive stays, and so do namespace {namespace} and the write-ahead-log volumes in it (create the Tenant again to ship what a dataplane could not; delete the namespace once `imgate archive verify` finds every record)"
    );
    Ok(Action::await_change())
}
