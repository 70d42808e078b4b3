//! One reconcile of one Tenant: its finalizer, its policy set, its objects, its status.
//!
//! Invariants: the steps run in that order, so a Tenant never has objects the operator could
//! not clean up; a failed step fails the reconcile (and is retried with backoff) before the
//! next one runs, and a write the API server refuses is shown on the Tenant
//! ([`refusal`]); a deleted Tenant is drained, never re-applied.

use std::sync::Arc;
use std::time::Duration;

use imgate_crds::Tenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::Instrument;
use tracing::field::Empty;

use super::status::{Observed, tenant_status};
use super::{Context, Error, apply, finalizer, policies, refusal, write_tenant_status};
use crate::desired::desired;
use imgate_dataplane::TRACE_TARGET;

/// How often a Tenant is reconciled when nothing it watches changes.
pub const RESYNC: Duration = Duration::from_secs(300);

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
    let applied = match apply::apply_all(&objects, &name, ctx).await {
        Ok(applied) => applied,
        Err(error) => {
            if let Some(message) = refusal::message(&error) {
                refusal::report(tenant, message, ctx, now).await;
            }
            return Err(error);
        }
    };
    let observed = Observed {
        tenant: &name,
        generation: tenant.metadata.generation,
        policy: outcome,
        tunnel_service: &applied.tunnel_service,
        stateful_set: &applied.stateful_set,
        enrollment: &applied.enrollment,
        enroll_connector: &tenant.spec.tunnel.enroll_connector,
    };
    let previous = tenant.status.clone().unwrap_or_default();
    let status = tenant_status(&observed, &previous, &ctx.settings, now);
    write_tenant_status(tenant, status, ctx).await?;
    Ok(Action::requeue(RESYNC))
}
