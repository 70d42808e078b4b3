//! A tenant's IMPolicies: listed by the field `spec.tenantRef`, compiled together with the
//! dataplane's compiler, and each told whether it was accepted; a set that does not compile
//! leaves the revision the policy ConfigMap carries.
//!
//! Invariants: each policy's `Accepted` condition names exactly the problems found in it, by
//! field; a Warning Event is published only when a policy's problems change, not on every
//! reconcile; a status is written only when it changes.

use imgate_crds::{IMPolicy, IMPolicyStatus};
use imgate_dataplane::inspect::policy::Diagnostic;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use super::conditions::{State, Wanted, find, merge};
use super::status::PolicyOutcome;
use super::{Context, Error, api, apply_status, warning};
use crate::desired::POLICY_REVISION;
use crate::names;
use crate::policy::PolicySet;

/// Lists and compiles `tenant`'s policies, and reports on each: the set to deliver (none when
/// it does not compile) and the outcome for the Tenant's status.
pub async fn evaluate(
    tenant: &str,
    ctx: &Context,
    now: &Time,
) -> Result<(Option<PolicySet>, PolicyOutcome), Error> {
    let all: Api<IMPolicy> = Api::all(ctx.client.clone());
    let params = ListParams::default().fields(&format!("spec.tenantRef={tenant}"));
    let policies = all
        .list(&params)
        .await
        .map_err(api("list", format!("IMPolicies of tenant {tenant}")))?
        .items;
    let built = PolicySet::build(tenant, &policies);
    let diagnostics = built
        .as_ref()
        .err()
        .map(|e| e.0.as_slice())
        .unwrap_or_default();
    for policy in &policies {
        report(policy, diagnostics, ctx, now).await?;
    }
    Ok(match built {
        Ok(set) => {
            let outcome = PolicyOutcome::Applied {
                revision: set.revision.clone(),
                policies: set.policies.len(),
            };
            (Some(set), outcome)
        }
        Err(error) => (
            None,
            PolicyOutcome::Rejected {
                message: error.to_string(),
                kept: kept_revision(tenant, ctx).await?,
            },
        ),
    })
}

/// The revision `tenant`'s policy ConfigMap carries, read from the API server: the Tenant a
/// reconcile is handed may lag behind the status the previous reconcile wrote.
async fn kept_revision(tenant: &str, ctx: &Context) -> Result<Option<String>, Error> {
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &names::namespace(tenant));
    let kept = maps
        .get_metadata_opt(names::POLICY_CONFIG_MAP)
        .await
        .map_err(api(
            "get",
            format!("ConfigMap/{}", names::POLICY_CONFIG_MAP),
        ))?;
    Ok(kept.and_then(|map| map.annotations().get(POLICY_REVISION).cloned()))
}

/// `namespace/name`, as diagnostics name a policy.
fn key(policy: &IMPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

/// The `Accepted` condition of `policy` given the set's `diagnostics`.
fn accepted(policy: &IMPolicy, diagnostics: &[Diagnostic]) -> Wanted {
    let key = key(policy);
    let problems: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.policy == key)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if problems.is_empty() {
        Wanted::new(
            "Accepted",
            State::True,
            "Compiled",
            format!("{} content rules compiled", policy.spec.content.len()),
        )
    } else {
        Wanted::new("Accepted", State::False, "Invalid", problems.join("; "))
    }
}

/// Writes `policy`'s status when it changed, and publishes an Event when it became invalid
/// or its problems changed.
async fn report(
    policy: &IMPolicy,
    diagnostics: &[Diagnostic],
    ctx: &Context,
    now: &Time,
) -> Result<(), Error> {
    let wanted = accepted(policy, diagnostics);
    let previous = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let status = IMPolicyStatus {
        observed_generation: generation,
        conditions: merge(&previous.conditions, vec![wanted.clone()], generation, now),
        rules: i32::try_from(policy.spec.content.len()).ok(),
    };
    if status == previous {
        return Ok(());
    }
    let namespace = policy.namespace().unwrap_or_default();
    let policies: Api<IMPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    apply_status(&policies, &policy.name_any(), &status).await?;
    let was = find(&previous.conditions, "Accepted");
    let news = was.is_none_or(|c| c.status != "False" || c.message != wanted.message);
    if wanted.state == State::False && news {
        publish_invalid(policy, &wanted.message, ctx).await;
    }
    Ok(())
}

/// A Warning Event on `policy` saying what is wrong.
async fn publish_invalid(policy: &IMPolicy, problems: &str, ctx: &Context) {
    let note =
        format!("not applied; the dataplanes keep enforcing the last good policy set: {problems}");
    warning::publish(
        ctx,
        &policy.object_ref(&()),
        "InvalidPolicy",
        "Compile",
        note,
    )
    .await;
}
