//! Validation of an imgate manifest as the API server would do it: the structural schema
//! first, then the CEL rules, plus the object metadata every resource needs.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::schema_check::SchemaChecker;
use crate::tenant::TENANT_NAME_MAX;
use crate::{IMPolicy, Tenant};

/// The imgate resource kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// `Tenant`, cluster-scoped.
    Tenant,
    /// `IMPolicy`, namespaced.
    IMPolicy,
}

impl ResourceKind {
    /// The kind named by a manifest's `apiVersion` and `kind`, if it is an imgate resource.
    pub fn of(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.split('/').next().unwrap_or_default();
        if group != crate::GROUP {
            return None;
        }
        match kind {
            "Tenant" => Some(Self::Tenant),
            "IMPolicy" => Some(Self::IMPolicy),
            _ => None,
        }
    }

    fn schema(self) -> &'static Value {
        static TENANT: OnceLock<Value> = OnceLock::new();
        static POLICY: OnceLock<Value> = OnceLock::new();
        let (cell, crd) = match self {
            Self::Tenant => (&TENANT, Tenant::crd as fn() -> CustomResourceDefinition),
            Self::IMPolicy => (&POLICY, IMPolicy::crd as fn() -> CustomResourceDefinition),
        };
        cell.get_or_init(|| {
            let crd = crd();
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            serde_json::to_value(schema).unwrap_or_default()
        })
    }
}

/// One problem with one field of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, as `spec.content[2].match.regex`; empty for the object as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem the API server would report for this manifest, plus unknown fields.
pub fn validate_object(kind: ResourceKind, object: &Value) -> Vec<FieldError> {
    let mut errors = metadata_errors(kind, object);
    let schema = kind.schema();
    errors.extend(SchemaChecker::default().check(schema, object));
    if errors.is_empty()
        && let Err(failures) = kube::core::cel::Validator::new().validate(schema, object, None)
    {
        errors.extend(failures.iter().map(|failure| FieldError {
            path: failure.field_path.clone(),
            message: failure.message.clone(),
        }));
    }
    errors
}

fn metadata_errors(kind: ResourceKind, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = object.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None => errors.push(FieldError {
            path: "metadata.name".into(),
            message: "required field is missing".into(),
        }),
        Some(name) if !is_dns_subdomain(name) => errors.push(FieldError {
            path: "metadata.name".into(),
            message: format!("{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit"),
        }),
        Some(name) if kind == ResourceKind::Tenant && name.len() > TENANT_NAME_MAX => {
            errors.push(FieldError {
                path: "metadata.name".into(),
                message: format!("Too long: may not be more than {TENANT_NAME_MAX} bytes (a tenant name prefixes its namespace and object names)"),
            })
        }
        Some(_) => {}
    }
    if kind == ResourceKind::Tenant && object.pointer("/metadata/namespace").is_some() {
        errors.push(FieldError {
            path: "metadata.namespace".into(),
            message: "a Tenant is cluster-scoped: remove the namespace".into(),
        });
    }
    errors
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(spec: Value) -> Value {
        json!({"apiVersion": "imgate.io/v1alpha1", "kind": "IMPolicy", "metadata": {"name": "p", "namespace": "acme"}, "spec": spec})
    }

    #[test]
    fn a_valid_policy_passes() {
        let value = policy(
            json!({"tenantRef": "acme", "content": [{"name": "cards", "match": {"detector": "credit-card"}, "action": "redact"}]}),
        );
        assert_eq!(validate_object(ResourceKind::IMPolicy, &value), vec![]);
    }

    #[test]
    fn schema_errors_name_the_field() {
        let value = policy(
            json!({"tenantRef": "acme", "mode": "audit", "priority": 20000, "protocols": {"allow": ["xmpp", "skype"]}}),
        );
        let errors = validate_object(ResourceKind::IMPolicy, &value);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["spec.mode", "spec.priority", "spec.protocols.allow[1]"],
            "{errors:?}"
        );
    }

    #[test]
    fn cel_rules_are_enforced() {
        let value = policy(
            json!({"tenantRef": "acme", "content": [{"name": "x", "match": {"keywords": ["a"], "regex": "b"}, "action": "block"}]}),
        );
        let errors = validate_object(ResourceKind::IMPolicy, &value);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("exactly one of keywords, regex or detector"),
            "{errors:?}"
        );
        assert!(
            errors[0].path.starts_with("spec.content[0].match"),
            "{errors:?}"
        );

        let tenant = json!({"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {"dataplane": {"replicas": {"min": 5, "max": 2}},
                     "archive": {"s3": {"bucket": "acme-archive", "region": "eu-west-2"}, "retention": {"days": 2557}}}});
        let errors = validate_object(ResourceKind::Tenant, &tenant);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("replicas.min must not exceed replicas.max"),
            "{errors:?}"
        );
    }

    #[test]
    fn metadata_is_checked() {
        let tenant = json!({"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "Acme", "namespace": "x"},
            "spec": {"archive": {"s3": {"bucket": "acme-archive", "region": "eu-west-2"}, "retention": {"days": 10}}}});
        let paths: Vec<String> = validate_object(ResourceKind::Tenant, &tenant)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, vec!["metadata.name", "metadata.namespace"]);
    }

    #[test]
    fn a_tenant_name_longer_than_its_namespace_allows_is_refused_at_its_field() {
        let long = "a".repeat(TENANT_NAME_MAX + 1);
        let tenant = json!({"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "metadata": {"name": long},
            "spec": {"archive": {"s3": {"bucket": "acme-archive", "region": "eu-west-2"}, "retention": {"days": 10}}}});
        let errors = validate_object(ResourceKind::Tenant, &tenant);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "metadata.name");
        assert!(
            errors[0]
                .message
                .starts_with("Too long: may not be more than 40"),
            "{errors:?}"
        );
        let crd = crate::generate::crds().remove(0);
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("JSON");
        assert_eq!(
            schema["openAPIV3Schema"]["properties"]["metadata"],
            json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 40}}}),
            "the API server enforces the same bound at the same field"
        );
    }
}
