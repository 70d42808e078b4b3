//! The RBAC rules the Helm chart grants the operator and the dataplanes, read from the
//! chart's templates, and the check that a request is within them: every scripted API server
//! applies it to every request, so a step that needs a permission the chart does not grant
//! fails its scenario.
//!
//! Invariants: a request is authorised the way the API server's RBAC authoriser does it
//! (verb from method, path and `watch`; API group; resource with its subresource; name
//! against `resourceNames`); a server-side apply of a whole object also needs `create`, as
//! the API server demands when the object does not exist yet; a write whose body sets an
//! owner reference with `blockOwnerDeletion` also needs `update` on the owner's `finalizers`
//! subresource, as the `OwnerReferencesPermissionEnforcement` admission plugin (on in
//! OpenShift and many hardened clusters) demands.

use std::path::Path;
use std::sync::LazyLock;

use http::Method;
use serde_json::Value;

/// Who makes the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The operator, under its ClusterRole and leader-election Role.
    Operator,
    /// A tenant's dataplane, under the ClusterRole its tenant's RoleBinding grants.
    Dataplane,
}

impl Subject {
    /// The chart's templates that hold the subject's rules.
    fn templates(self) -> &'static [&'static str] {
        match self {
            Subject::Operator => &["clusterrole.yaml", "role.yaml"],
            Subject::Dataplane => &["dataplane-clusterrole.yaml"],
        }
    }
}

/// One rule of a ClusterRole or Role.
#[derive(Debug)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

/// Every rule the chart grants the operator, and the dataplanes.
static RULES: LazyLock<[Vec<Rule>; 2]> =
    LazyLock::new(|| [rules(Subject::Operator), rules(Subject::Dataplane)]);

fn rules(subject: Subject) -> Vec<Rule> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/imgate/templates");
    subject
        .templates()
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(folder.join(file)).expect("the chart's RBAC");
            // The template lines are labels and names; the rules are plain YAML.
            let plain: String = text
                .lines()
                .filter(|line| !line.contains("{{"))
                .map(|line| format!("{line}\n"))
                .collect();
            let documents: Vec<Value> =
                serde_saphyr::from_multiple(&plain).expect("the chart's RBAC is YAML");
            documents
        })
        .flat_map(|document| document["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            Rule {
                groups: strings("apiGroups"),
                resources: strings("resources"),
                verbs: strings("verbs"),
                names: strings("resourceNames"),
            }
        })
        .collect()
}

/// What the RBAC authoriser sees in a request.
#[derive(Clone, Debug, PartialEq)]
struct Attributes {
    verb: &'static str,
    group: String,
    resource: String,
    name: Option<String>,
}

fn attributes(method: &Method, uri: &str) -> Attributes {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not an API path: {uri}"),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
        _ => panic!("not a resource path: {uri}"),
    };
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    // As the API server does, a list or watch selecting one name is authorised for it.
    let selected = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("fieldSelector="))
        .flat_map(|selector| {
            let decoded = selector.replace("%3D", "=").replace("%2C", ",");
            decoded
                .split(',')
                .filter_map(|term| term.strip_prefix("metadata.name=").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .next();
    let verb = match (method, name) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => panic!("no RBAC verb for {method} {uri}"),
    };
    Attributes {
        verb,
        group,
        resource: match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        },
        name: name.map(str::to_owned).or(selected),
    }
}

fn granted(subject: Subject, wanted: &Attributes) -> bool {
    RULES[subject as usize].iter().any(|rule| {
        rule.groups.contains(&wanted.group)
            && rule.resources.contains(&wanted.resource)
            && rule.verbs.iter().any(|v| v == wanted.verb)
            && (rule.names.is_empty()
                || wanted.name.as_ref().is_some_and(|n| rule.names.contains(n)))
    })
}

/// What the owner-reference permission plugin demands of a write with `body`: `update` on
/// the `finalizers` of each owner that the body blocks the deletion of.
fn owner_finalizers(body: &Value) -> Vec<Attributes> {
    body["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|owner| owner["blockOwnerDeletion"] == true)
        .map(|owner| {
            let api_version = owner["apiVersion"].as_str().unwrap_or_default();
            let group = api_version
                .rsplit_once('/')
                .map_or("", |(group, _)| group)
                .to_owned();
            let kind = owner["kind"].as_str().unwrap_or_default().to_lowercase();
            Attributes {
                verb: "update",
                group,
                resource: format!("{kind}s/finalizers"),
                name: owner["name"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

/// Whether the chart lets `subject` make this request with `body`; the missing permission if
/// not.
pub fn permits(subject: Subject, method: &Method, uri: &str, body: &Value) -> Result<(), String> {
    let wanted = attributes(method, uri);
    let apply = method == Method::PATCH && uri.contains("force=true");
    let mut needed = vec![wanted.clone()];
    if apply && !wanted.resource.contains('/') {
        needed.push(Attributes {
            verb: "create",
            name: None,
            ..wanted.clone()
        });
    }
    if matches!(wanted.verb, "create" | "update" | "patch") {
        needed.extend(owner_finalizers(body));
    }
    match needed
        .iter()
        .find(|attributes| !granted(subject, attributes))
    {
        None => Ok(()),
        Some(missing) => Err(format!(
            "charts/imgate grants the {subject:?} no `{}` on {}{}{} for {method} {uri}",
            missing.verb,
            missing.resource,
            if missing.group.is_empty() { "" } else { "." },
            missing.group,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_rbac_attributes() {
        let cases = [
            (
                Method::GET,
                "/apis/imgate.io/v1alpha1/namespaces/acme/impolicies?fieldSelector=x",
                ("list", "imgate.io", "impolicies", None),
            ),
            (
                Method::GET,
                "/api/v1/pods?watch=true&resourceVersion=1",
                ("watch", "", "pods", None),
            ),
            (
                Method::PATCH,
                "/apis/imgate.io/v1alpha1/tenants/acme/status?fieldManager=x",
                ("patch", "imgate.io", "tenants/status", Some("acme")),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/imgate-acme?fieldManager=x&force=true",
                ("patch", "", "namespaces", Some("imgate-acme")),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/imgate-acme/secrets?",
                ("create", "", "secrets", None),
            ),
            (
                Method::DELETE,
                "/apis/autoscaling/v2/namespaces/imgate-acme/horizontalpodautoscalers/dataplane",
                (
                    "delete",
                    "autoscaling",
                    "horizontalpodautoscalers",
                    Some("dataplane"),
                ),
            ),
        ];
        for (method, uri, (verb, group, resource, name)) in cases {
            assert_eq!(
                attributes(&method, uri),
                Attributes {
                    verb,
                    group: group.into(),
                    resource: resource.into(),
                    name: name.map(str::to_owned),
                },
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn the_chart_grants_what_reconciling_needs_and_no_more() {
        assert!(
            permits(
                Subject::Operator,
                &Method::PATCH,
                "/api/v1/namespaces/x?fieldManager=f&force=true",
                &Value::Null
            )
            .is_ok()
        );
        assert!(
            permits(
                Subject::Operator,
                &Method::GET,
                "/api/v1/namespaces/x/secrets/tunnel-ca",
                &Value::Null
            )
            .is_ok()
        );
        let denied = [
            (Method::GET, "/api/v1/namespaces/x/secrets"),
            (Method::PUT, "/api/v1/namespaces/x/secrets/tunnel-ca"),
            (Method::DELETE, "/api/v1/namespaces/x"),
            (
                Method::DELETE,
                "/api/v1/namespaces/x/persistentvolumeclaims/wal-dataplane-0",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/someone-else",
            ),
        ];
        for (method, uri) in denied {
            let refused = permits(Subject::Operator, &method, uri, &Value::Null).expect_err(uri);
            assert!(refused.contains("grants the Operator no"), "{refused}");
        }
        assert!(
            permits(
                Subject::Operator,
                &Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/imgate-operator",
                &Value::Null
            )
            .is_ok()
        );
    }

    #[test]
    fn the_dataplanes_may_redeem_the_enrollment_token_and_follow_their_policy_and_nothing_else() {
        let secret = format!(
            "/api/v1/namespaces/imgate-acme/secrets/{}",
            crate::names::ENROLLMENT_SECRET
        );
        assert!(permits(Subject::Dataplane, &Method::GET, &secret, &Value::Null).is_ok());
        assert!(permits(Subject::Dataplane, &Method::PUT, &secret, &Value::Null).is_ok());
        let record = format!(
            "/api/v1/namespaces/imgate-acme/secrets/{}",
            crate::names::GENERATIONS_SECRET
        );
        assert!(permits(Subject::Dataplane, &Method::GET, &record, &Value::Null).is_ok());
        assert!(permits(Subject::Dataplane, &Method::PUT, &record, &Value::Null).is_ok());
        let follow = format!(
            "/api/v1/namespaces/imgate-acme/secrets?fieldSelector=metadata.name%3D{}&watch=true&resourceVersion=10",
            crate::names::GENERATIONS_SECRET
        );
        assert!(permits(Subject::Dataplane, &Method::GET, &follow, &Value::Null).is_ok());
        let policy =
            "/api/v1/namespaces/imgate-acme/configmaps?fieldSelector=metadata.name%3Dpolicy";
        assert!(permits(Subject::Dataplane, &Method::GET, policy, &Value::Null).is_ok());
        let watch = format!("{policy}&watch=true&resourceVersion=10");
        assert!(permits(Subject::Dataplane, &Method::GET, &watch, &Value::Null).is_ok());
        let denied = [
            (
                Method::GET,
                "/api/v1/namespaces/imgate-acme/secrets/tunnel-ca",
            ),
            (Method::GET, "/api/v1/namespaces/imgate-acme/secrets"),
            (Method::DELETE, secret.as_str()),
            (Method::PATCH, secret.as_str()),
            (Method::DELETE, record.as_str()),
            (
                Method::GET,
                "/api/v1/namespaces/imgate-acme/secrets?watch=true",
            ),
            (Method::GET, "/api/v1/namespaces/imgate-acme/pods"),
            (Method::GET, "/api/v1/namespaces/imgate-acme/configmaps"),
            (
                Method::GET,
                "/api/v1/namespaces/imgate-acme/configmaps?watch=true",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/imgate-acme/configmaps/policy",
            ),
        ];
        for (method, uri) in denied {
            let refused = permits(Subject::Dataplane, &method, uri, &Value::Null).expect_err(uri);
            assert!(refused.contains("grants the Dataplane no"), "{refused}");
        }
        let template = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/imgate/templates/dataplane-clusterrole.yaml");
        let text = std::fs::read_to_string(template).expect("the dataplanes' ClusterRole");
        assert!(text.contains(&format!("  name: {}\n", crate::names::DATAPLANE_ROLE)));
        let bind = |name: &str| Attributes {
            verb: "bind",
            group: "rbac.authorization.k8s.io".into(),
            resource: "clusterroles".into(),
            name: Some(name.into()),
        };
        assert!(granted(
            Subject::Operator,
            &bind(crate::names::DATAPLANE_ROLE)
        ));
        assert!(!granted(Subject::Operator, &bind("cluster-admin")));
    }

    #[test]
    fn owned_objects_need_the_owners_finalizers_under_hardened_admission() {
        let owned = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "name": "acme",
            "uid": "u", "controller": true, "blockOwnerDeletion": true}]}});
        assert_eq!(
            owner_finalizers(&owned),
            [Attributes {
                verb: "update",
                group: "imgate.io".into(),
                resource: "tenants/finalizers".into(),
                name: Some("acme".into()),
            }]
        );
        let apply =
            "/apis/apps/v1/namespaces/imgate-acme/statefulsets/dataplane?fieldManager=f&force=true";
        assert!(permits(Subject::Operator, &Method::PATCH, apply, &owned).is_ok());
        let secrets = "/api/v1/namespaces/imgate-acme/secrets?";
        assert!(permits(Subject::Operator, &Method::POST, secrets, &owned).is_ok());
        let unblocking = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u", "blockOwnerDeletion": false}]}});
        assert!(owner_finalizers(&unblocking).is_empty());
        let foreign = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "Namespace", "name": "kube-system", "uid": "u", "blockOwnerDeletion": true}]}});
        let refused = permits(Subject::Operator, &Method::POST, secrets, &foreign)
            .expect_err("no finalizers of namespaces");
        assert!(
            refused.contains("no `update` on namespaces/finalizers"),
            "{refused}"
        );
    }
}
