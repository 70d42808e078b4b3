//! Proof that a manifest's objects are the Kubernetes types they claim to be, and that an API
//! server would accept them: each document is read as the type its `apiVersion` and `kind`
//! name and written back, and any field the type does not have, or holds in another shape,
//! shows up as a difference; an object of the right shape then gets the API server's own
//! validation rules ([`crate::validation`]). imgate's own resources get the same checks as
//! `imgate policy lint`.
//!
//! Invariants: an unknown `apiVersion`/`kind` is an error, never a pass; explicit `null`s
//! count as absent (the API server drops them too); every problem names the document and the
//! field.

use imgate_crds::{ResourceKind, validate_object};

use crate::validation::{Validate, problems_of};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Problems in one document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index} ({kind}/{name}): {problem}")]
pub struct Problem {
    /// The document's position in the stream, from 1.
    pub index: usize,
    /// Its kind, as written.
    pub kind: String,
    /// Its name, as written.
    pub name: String,
    /// What is wrong, naming the field.
    pub problem: String,
}

/// Checks every document of a YAML stream; returns how many objects it holds, or every
/// problem found.
pub fn check_yaml(text: &str) -> Result<usize, Vec<Problem>> {
    let documents: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(documents) => documents,
        Err(error) => {
            return Err(vec![Problem {
                index: 0,
                kind: String::new(),
                name: String::new(),
                problem: format!("not YAML: {error}"),
            }]);
        }
    };
    let mut problems = Vec::new();
    let mut count = 0;
    for (i, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        count += 1;
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for problem in check_object(&document) {
            problems.push(Problem {
                index: i + 1,
                kind: kind.clone(),
                name: name.clone(),
                problem,
            });
        }
    }
    if problems.is_empty() {
        Ok(count)
    } else {
        Err(problems)
    }
}

/// Problems with one object (none when it is what it claims to be).
pub fn check_object(object: &Value) -> Vec<String> {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, networking, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return vec!["metadata.name is missing".into()];
    }
    let owners = object["metadata"]["ownerReferences"].as_array();
    if owners.is_some_and(|o| {
        o.iter()
            .any(|r| r["uid"].as_str().is_none_or(str::is_empty))
    }) {
        return vec!["metadata.ownerReferences: an owner reference needs its owner's uid".into()];
    }
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(object),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(object),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(object),
        ("v1", "Service") => round_trip::<core::v1::Service>(object),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(object),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(object),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<policy::v1::PodDisruptionBudget>(object)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::v1::ClusterRole>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(object)
        }
        ("coordination.k8s.io/v1", "Lease") => round_trip::<coordination::v1::Lease>(object),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(object)
        }
        (imgate_crds::API_VERSION, "Tenant") => ours(ResourceKind::Tenant, object),
        (imgate_crds::API_VERSION, "IMPolicy") => ours(ResourceKind::IMPolicy, object),
        _ => vec![format!(
            "apiVersion {api_version:?} kind {kind:?} is not a kind this check knows"
        )],
    }
}

fn ours(kind: ResourceKind, object: &Value) -> Vec<String> {
    validate_object(kind, object)
        .into_iter()
        .map(|error| error.to_string())
        .collect()
}

/// Reads `object` as `K` and writes it back; the differences are the problems.
fn round_trip<K>(object: &Value) -> Vec<String>
where
    K: k8s_openapi::Resource + DeserializeOwned + Serialize + Validate,
{
    let typed: K = match serde_json::from_value(object.clone()) {
        Ok(typed) => typed,
        Err(error) => return vec![format!("not a {}: {error}", K::KIND)],
    };
    let mut back = match serde_json::to_value(&typed) {
        Ok(back) => back,
        Err(error) => return vec![format!("cannot be written back: {error}")],
    };
    if let Some(map) = back.as_object_mut() {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    let mut problems = Vec::new();
    differences("", &without_nulls(object), &back, K::KIND, &mut problems);
    if problems.is_empty() {
        problems = problems_of(&typed);
    }
    problems
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn differences(path: &str, written: &Value, read: &Value, kind: &str, out: &mut Vec<String>) {
    match (written, read) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(other) => differences(&field, value, other, kind, out),
                    None => out.push(format!("{field}: {kind} has no such field")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), x, y, kind, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: written {a}, read back as {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_stream_passes_and_is_counted() {
        let text = "---
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: x, annotations: null}
data: {k: v}
---
# an empty document, as templates leave behind
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: b}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: x}}}
";
        assert_eq!(check_yaml(text), Ok(2));
    }

    #[test]
    fn unknown_fields_wrong_shapes_and_unknown_kinds_are_named() {
        let text = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: s}
spec:
  replica: 2
  selector: {matchLabels: {app: x}}
  serviceName: x
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: c, image: i, securityContext: {readOnlyRootFS: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec: {ports: [{port: http}]}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: v1
kind: Secret
metadata: {}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: owned, ownerReferences: [{apiVersion: v1, kind: Tenant, name: t, uid: ''}]}
";
        let problems = check_yaml(text).expect_err("problems");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|p| p.contains("StatefulSet/s") && p.contains("spec.replica:")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("securityContext.readOnlyRootFS")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("Service/svc") && p.contains("not a Service")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("Widget") && p.contains("not a kind this check knows")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|p| p.contains("metadata.name is missing")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|p| p.contains("needs its owner's uid")),
            "{text:?}"
        );
        assert_eq!(problems.len(), 6, "{text:?}");
    }

    #[test]
    fn imgate_resources_get_the_lint_checks() {
        let text = "apiVersion: imgate.io/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  archive:
    s3: {bucket: acme-archive, region: moon}
    retention: {days: 30}
";
        let problems = check_yaml(text).expect_err("a bad region");
        assert!(problems[0].problem.contains("region"), "{problems:?}");
    }
}
