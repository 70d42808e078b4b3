//! A tenant's IMPolicy set, compiled with the dataplane's own compiler and packed for the
//! dataplanes.
//!
//! Invariants: [`PolicySet::build`] succeeds only for a set that compiles, so a ConfigMap made
//! from it never carries a policy a dataplane would refuse; the revision is a digest of
//! exactly what the dataplanes receive, in a fixed order, so equal sets give equal revisions
//! wherever they are built.

use imgate_crds::{IMPolicy, IMPolicySpec};
use imgate_dataplane::inspect::policy::{CompileError, CompiledPolicy};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The file in the policy ConfigMap that dataplanes load.
pub const POLICY_FILE: &str = "policy.yaml";
/// The file in the policy ConfigMap with the tenant's `spec.identity`, when it has one.
pub const IDENTITY_FILE: &str = "identity.yaml";
/// The file in the policy ConfigMap listing the tenant's revoked connectors, one a line.
pub const REVOKED_FILE: &str = "revoked-connectors";

/// Why a delivered policy set was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DeliveredError {
    /// The text is not a YAML stream of IMPolicies.
    #[error("the delivered policy set is not a YAML stream of IMPolicies: {0}")]
    Yaml(String),
    /// The policies do not compile.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Compiles, for `tenant`, a policy set as [`PolicySet::build`] packed it (`yaml`).
pub fn compile_delivered(tenant: &str, yaml: &str) -> Result<CompiledPolicy, DeliveredError> {
    let policies: Vec<IMPolicy> =
        serde_saphyr::from_multiple(yaml).map_err(|e| DeliveredError::Yaml(e.to_string()))?;
    Ok(CompiledPolicy::compile(tenant, &policies)?)
}

/// A tenant's policies as its dataplanes receive them.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySet {
    /// The policies, as a YAML stream of IMPolicy documents.
    pub yaml: String,
    /// A short digest of `yaml`.
    pub revision: String,
    /// The policies in it, as `namespace/name`, in the order of `yaml`.
    pub policies: Vec<String>,
}

/// What a dataplane is given of one policy: what the compiler reads, without the
/// metadata the API server adds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Delivered<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: DeliveredMeta<'a>,
    spec: &'a IMPolicySpec,
}

#[derive(Serialize)]
struct DeliveredMeta<'a> {
    name: &'a str,
    namespace: &'a str,
}

impl PolicySet {
    /// Compiles `tenant`'s policies among `policies` (others are ignored) and packs them.
    pub fn build(tenant: &str, policies: &[IMPolicy]) -> Result<Self, CompileError> {
        CompiledPolicy::compile(tenant, policies)?;
        let mut mine: Vec<&IMPolicy> = policies
            .iter()
            .filter(|p| p.spec.tenant_ref == tenant)
            .collect();
        mine.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
        let mut yaml = String::new();
        let mut names = Vec::new();
        for policy in mine {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
            let name = policy.metadata.name.as_deref().unwrap_or_default();
            let delivered = Delivered {
                api_version: imgate_crds::API_VERSION,
                kind: "IMPolicy",
                metadata: DeliveredMeta { name, namespace },
                spec: &policy.spec,
            };
            yaml.push_str("---\n");
            yaml.push_str(&serde_saphyr::to_string(&delivered).map_err(|e| {
                CompileError(vec![imgate_dataplane::inspect::policy::Diagnostic {
                    policy: format!("{namespace}/{name}"),
                    path: "spec".into(),
                    message: format!("cannot be written as YAML: {e}"),
                }])
            })?);
            names.push(format!("{namespace}/{name}"));
        }
        let revision = hex::encode(&Sha256::digest(yaml.as_bytes())[..6]);
        Ok(Self {
            yaml,
            revision,
            policies: names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(namespace: &str, name: &str, tenant: &str, regex: &str) -> IMPolicy {
        serde_saphyr::from_str(&format!(
            "apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {{name: {name}, namespace: {namespace}, uid: abc, resourceVersion: '7'}}
spec:
  tenantRef: {tenant}
  content:
    - name: words
      match: {{regex: '{regex}'}}
      action: block
"
        ))
        .expect("policy")
    }

    #[test]
    fn the_revision_depends_on_the_set_not_on_order_or_server_metadata() {
        let a = policy("ops", "a", "acme", "secret");
        let b = policy("ops", "b", "acme", "launch");
        let other = policy("ops", "c", "globex", "x");
        let one = PolicySet::build("acme", &[a.clone(), b.clone(), other]).expect("compiles");
        let two = PolicySet::build("acme", &[b.clone(), a.clone()]).expect("compiles");
        assert_eq!(one, two);
        assert_eq!(one.policies, ["ops/a", "ops/b"]);
        assert!(!one.yaml.contains("resourceVersion") && !one.yaml.contains("globex"));
        let changed = PolicySet::build("acme", &[a, policy("ops", "b", "acme", "launches")])
            .expect("compiles");
        assert_ne!(changed.revision, one.revision);
    }

    #[test]
    fn a_set_that_does_not_compile_says_where() {
        let error = PolicySet::build("acme", &[policy("ops", "bad", "acme", "(unclosed")])
            .expect_err("an invalid regex");
        let first = &error.0[0];
        assert_eq!(first.policy, "ops/bad");
        assert!(first.path.contains("content"), "{first}");
    }

    #[test]
    fn a_delivered_set_compiles_to_what_was_built() {
        let a = policy("ops", "a", "acme", "secret");
        let b = policy("ops", "b", "acme", "launch");
        let set = PolicySet::build("acme", &[a.clone(), b.clone()]).expect("compiles");
        let delivered = compile_delivered("acme", &set.yaml).expect("compiles");
        let direct = CompiledPolicy::compile("acme", &[a, b]).expect("compiles");
        assert_eq!(delivered.content_rule_count(), 2);
        assert_eq!(delivered.content_rule_count(), direct.content_rule_count());
        assert!(matches!(
            compile_delivered("acme", "---\n[not, a, policy]\n"),
            Err(DeliveredError::Yaml(_))
        ));
        let broken = set.yaml.replace("secret", "(unclosed");
        assert!(matches!(
            compile_delivered("acme", &broken),
            Err(DeliveredError::Compile(_))
        ));
    }
}
