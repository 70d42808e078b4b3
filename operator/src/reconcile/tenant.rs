//! One reconcile of one Tenant: its finalizer, its policy set, its objects, its status.
//!
//! Invariants: the steps run in that order, so a Tenant never has objects the operator could
//! not clean up; a failed step fails the reconcile (and is retried with backoff) before the
//! next one runs, and a write the API server refuses is shown on the Tenant
//! ([`refusal`]); a deleted Tenant is drained, never re-applied.

use std::sync::Arc;
use std::time::Duration;

use imgate_crds::{Tenant, TenantStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use tracing::field::Empty;

use super::conditions::find;
use super::status::{self, Observed, tenant_status};
use super::{
    Context, Error, adoption, apply, finalizer, pods, policies, refusal, warning,
    write_tenant_status,
};
use crate::desired::desired;
use imgate_dataplane::TRACE_TARGET;

/// How often a Tenant is reconciled when nothing it watches changes.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a Tenant without a ready dataplane is reconciled, to say what its pods wait for.
pub const NOT_READY_POLL: Duration = Duration::from_secs(30);
/// How often once its dataplanes are stuck ([`status::STALLED`]).
pub const STALLED_POLL: Duration = Duration::from_secs(120);

/// Whether `status` says that `Ready` waits for the dataplanes.
fn waiting_on_dataplanes(status: &TenantStatus) -> bool {
    find(&status.conditions, "Ready")
        .is_some_and(|c| c.reason == "NoDataplaneReady" || c.reason == status::STALLED)
}

/// Brings `tenant` to its desired state, or drains it when it is being deleted.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "reconcile",
        imgate.tenant = %tenant.name_any(),
        k8s.namespace.name = tenant.namespace().as_deref().unwrap_or_default(),
        imgate.generation = tenant.metadata.generation.unwrap_or_default(),
        imgate.deleting = tenant.metadata.deletion_timestamp.is_some(),
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    let timer = ctx.metrics.started();
    let now = Time(Timestamp::now());
    let result = if tenant.metadata.deletion_timestamp.is_some() {
        finalizer::drain(&tenant, &ctx, &now)
            .instrument(span.clone())
            .await
    } else {
        converge(&tenant, &ctx, &now).instrument(span.clone()).await
    };
    ctx.metrics.finished(timer, result.as_ref().err());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&tenant.name_any());
    }
    if let Err(error) = &result {
        span.record("error.type", error.metric_label());
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", tracing::field::display(error));
        tracing::warn!(parent: &span, tenant = %tenant.name_any(), %error, "reconcile failed");
    }
    result
}

async fn converge(tenant: &Tenant, ctx: &Context, now: &Time) -> Result<Action, Error> {
    let name = tenant.name_any();
    finalizer::ensure(tenant, ctx).await?;
    let (set, outcome) = policies::evaluate(&name, ctx, now).await?;
    let objects = desired(tenant, set.as_ref(), &ctx.settings);
    let applied = async {
        adoption::check(tenant, ctx).await?;
        apply::apply_all(&objects, &name, ctx).await
    };
    let applied = match applied.await {
        Ok(applied) => applied,
        Err(error) => {
            if let Some((reason, message)) = refusal::message(&error) {
                refusal::report(tenant, reason, message, ctx, now).await;
            }
            return Err(error);
        }
    };
    let (ready, _) = status::dataplanes(&applied.stateful_set);
    let mut observed = Observed {
        tenant: &name,
        generation: tenant.metadata.generation,
        policy: outcome,
        tunnel_service: &applied.tunnel_service,
        stateful_set: &applied.stateful_set,
        enrollment: &applied.enrollment,
        enroll_connector: &tenant.spec.tunnel.enroll_connector,
        waiting: None,
    };
    let previous = tenant.status.clone().unwrap_or_default();
    let mut status = tenant_status(&observed, &previous, &ctx.settings, now);
    // Only when the dataplanes are what `Ready` is missing: ask their pods why.
    let why = if waiting_on_dataplanes(&status) {
        pods::why_not_ready(tenant, ctx)
            .await
            .inspect_err(|error| {
                tracing::warn!(tenant = %name, %error, "cannot tell why no dataplane is ready");
            })
            .ok()
    } else {
        None
    };
    if why.is_some() {
        observed.waiting = why.as_deref();
        status = tenant_status(&observed, &previous, &ctx.settings, now);
    }
    let stalled = |status: &TenantStatus| {
        find(&status.conditions, "Ready").is_some_and(|c| c.reason == status::STALLED)
    };
    let now_stalled = stalled(&status);
    if now_stalled && !stalled(&previous) {
        let message = find(&status.conditions, "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        warning::publish(
            ctx,
            &tenant.object_ref(&()),
            status::STALLED,
            "Start",
            message,
        )
        .await;
    }
    write_tenant_status(tenant, status, ctx).await?;
    // Pods are not watched: while none is ready, look again soon for what they wait for,
    // and less often once they are stuck.
    Ok(Action::requeue(match ready {
        0 if now_stalled => STALLED_POLL,
        0 => NOT_READY_POLL,
        _ => RESYNC,
    }))
}
