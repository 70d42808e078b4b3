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

/// Each example folder applies as `kubectl apply -f examples/NAME/` applies it, file by file
/// in name order: every object is valid, and every namespaced object's namespace was made
/// by an earlier document (no cluster has the firms' namespaces beforehand), and every
/// IMPolicy names the folder's Tenant.
#[test]
fn each_example_folder_applies_in_the_order_kubectl_reads_it() {
    use std::collections::BTreeSet;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut folders: Vec<_> = std::fs::read_dir(&root)
        .expect("examples")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_dir() && !path.ends_with("tests"))
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 3, "{folders:?}");
    for folder in folders {
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .expect("a folder")
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut namespaces = BTreeSet::new();
        let mut tenants = BTreeSet::new();
        let mut policies = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a file");
            let documents: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(&text).expect("YAML");
            for document in documents.iter().filter(|d| !d.is_null()) {
                let what = format!("{}: {}", file.display(), document["kind"]);
                let problems = crate::check::check_object(document);
                assert!(problems.is_empty(), "{what}: {problems:?}");
                let name = document["metadata"]["name"].as_str().unwrap_or_default();
                if let Some(namespace) = document["metadata"]["namespace"].as_str() {
                    assert!(
                        namespaces.contains(namespace),
                        "{what}: namespace {namespace} is not made by any earlier file"
                    );
                }
                match document["kind"].as_str() {
                    Some("Namespace") => namespaces.insert(name.to_owned()),
                    Some("Tenant") => tenants.insert(name.to_owned()),
                    Some("IMPolicy") => {
                        policies.push(document["spec"]["tenantRef"].as_str().map(str::to_owned));
                        true
                    }
                    other => panic!("{what}: an example holds no {other:?}"),
                };
            }
        }
        assert_eq!(tenants.len(), 1, "{}", folder.display());
        assert!(!policies.is_empty(), "{}", folder.display());
        for tenant in policies {
            assert!(
                tenant.as_ref().is_some_and(|t| tenants.contains(t)),
                "{}: an IMPolicy names {tenant:?}",
                folder.display()
            );
        }
    }
}
