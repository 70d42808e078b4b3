//! A tenant's namespace outlives its Tenant (it keeps the write-ahead-log volumes), so a
//! later Tenant of the same name finds it: its dataplanes would mount those volumes and ship
//! the earlier Tenant's unshipped records into the new Tenant's archive. Before the
//! namespace is applied, the operator makes sure it belongs to this Tenant.
//!
//! Invariants: a namespace that exists and names another Tenant's uid
//! ([`TENANT_UID`](names::TENANT_UID)) is taken only when the Tenant says so
//! ([`ADOPT_NAMESPACE`](names::ADOPT_NAMESPACE) set to that uid); otherwise nothing of the
//! tenant is applied and its `Ready` condition says what to do. A namespace without the
//! annotation (made before it existed, or by hand) is taken as it is.

use imgate_crds::Tenant;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::{Context, Error, api};
use crate::names;

/// Checks that `tenant` may have its namespace; the uid of the earlier Tenant holding it if
/// not.
pub async fn check(tenant: &Tenant, ctx: &Context) -> Result<(), Error> {
    let namespace = names::namespace(names::tenant_name(tenant));
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let existing = namespaces
        .get_metadata_opt(&namespace)
        .await
        .map_err(api("get", format!("Namespace/{namespace}")))?;
    let holder = existing
        .and_then(|n| n.metadata.annotations)
        .and_then(|a| a.get(names::TENANT_UID).cloned());
    match holder {
        Some(earlier) if held_by_another(tenant, &earlier) => {
            Err(Error::NamespaceHeld { namespace, earlier })
        }
        _ => Ok(()),
    }
}

/// Whether a namespace annotated with Tenant uid `earlier` is another Tenant's, which
/// `tenant` has not adopted.
fn held_by_another(tenant: &Tenant, earlier: &str) -> bool {
    let ours = tenant.metadata.uid.as_deref() == Some(earlier);
    let adopted = tenant
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ADOPT_NAMESPACE))
        .is_some_and(|uid| uid == earlier);
    !ours && !adopted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenant_itself_or_one_that_adopts_it_takes_a_namespace() {
        let mut tenant = crate::examples::tenant("small-firm/tenant.yaml");
        let ours = tenant.metadata.uid.clone().expect("a uid");
        assert!(!held_by_another(&tenant, &ours));
        assert!(held_by_another(&tenant, "uid-of-an-earlier-tenant"));
        tenant.metadata.annotations = Some(
            [(
                names::ADOPT_NAMESPACE.to_owned(),
                "uid-of-an-earlier-tenant".to_owned(),
            )]
            .into(),
        );
        assert!(!held_by_another(&tenant, "uid-of-an-earlier-tenant"));
        assert!(held_by_another(&tenant, "uid-of-yet-another-tenant"));
    }
}
