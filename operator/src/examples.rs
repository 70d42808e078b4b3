//! The repository's example Tenants and IMPolicies, as tests read them: what a real user
//! applies, given the uid and generation the API server would add.

use imgate_crds::{IMPolicy, Tenant};

fn example(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR")))
        .expect("example")
}

/// The Tenant in `examples/PATH`, as the API server holds it.
pub fn tenant(path: &str) -> Tenant {
    let mut tenant: Tenant = serde_saphyr::from_str(&example(path)).expect("tenant");
    tenant.metadata.uid = Some("0e6f5c1a-0000-4000-8000-000000000001".into());
    tenant.metadata.generation = Some(1);
    tenant.metadata.resource_version = Some("1".into());
    tenant
}

/// The IMPolicies in `examples/PATHS`, as the API server holds them.
pub fn policies(paths: &[&str]) -> Vec<IMPolicy> {
    paths
        .iter()
        .flat_map(|p| serde_saphyr::from_multiple::<IMPolicy>(&example(p)).expect("policies"))
        .map(|mut policy| {
            policy.metadata.generation = Some(1);
            policy
        })
        .collect()
}
