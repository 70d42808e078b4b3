//! The metadata rules every object gets (`ValidateObjectMeta`): its name in the format its
//! kind demands, label and annotation keys and values, and owner references.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::Problems;
use super::format::{is_dns_label, is_dns_subdomain, is_dns1035_label};

/// The most bytes of annotations an object may carry (keys and values together).
const ANNOTATIONS_MAX: usize = 256 * 1024;

/// The format a kind's names must have.
#[derive(Clone, Copy)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (Namespace).
    Label,
    /// A DNS-1035 label (Service: it becomes a DNS name and an environment variable).
    Dns1035,
    /// A path segment (RBAC objects): anything but `.`, `..`, `/` and `%`.
    Path,
}

/// Checks `meta` of an object whose names follow `rule`.
pub fn object_meta(meta: &ObjectMeta, rule: NameRule, problems: &mut Problems) {
    match meta.name.as_deref() {
        None | Some("") => problems.required("metadata.name"),
        Some(name) => {
            let valid = match rule {
                NameRule::Subdomain => is_dns_subdomain(name),
                NameRule::Label => is_dns_label(name),
                NameRule::Dns1035 => is_dns1035_label(name),
                NameRule::Path => !matches!(name, "." | "..") && !name.contains(['/', '%']),
            };
            if !valid {
                let why = match rule {
                    NameRule::Subdomain => {
                        "must be a lowercase RFC 1123 subdomain (lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character)"
                    }
                    NameRule::Label => {
                        "must be a lowercase RFC 1123 label (lower case alphanumeric characters or '-', starting and ending with an alphanumeric character, at most 63)"
                    }
                    NameRule::Dns1035 => {
                        "must be a DNS-1035 label (lower case alphanumeric characters or '-', starting with a letter and ending with an alphanumeric character, at most 63)"
                    }
                    NameRule::Path => "may not be '.' or '..' and may not contain '/' or '%'",
                };
                problems.invalid("metadata.name", name, why);
            }
        }
    }
    if let Some(namespace) = meta.namespace.as_deref()
        && !namespace.is_empty()
    {
        problems.dns_label("metadata.namespace", namespace);
    }
    for (key, value) in meta.labels.iter().flatten() {
        problems.label("metadata.labels", key, value);
    }
    let mut size = 0;
    for (key, value) in meta.annotations.iter().flatten() {
        // The API server checks annotation keys lower-cased.
        problems.qualified_name("metadata.annotations", &key.to_lowercase());
        size += key.len() + value.len();
    }
    if size > ANNOTATIONS_MAX {
        problems.invalid(
            "metadata.annotations",
            format!("{size} bytes"),
            "must have at most 262144 bytes",
        );
    }
    let mut controllers = 0;
    for (i, owner) in meta.owner_references.iter().flatten().enumerate() {
        let path = format!("metadata.ownerReferences[{i}]");
        for (field, value) in [
            ("apiVersion", &owner.api_version),
            ("kind", &owner.kind),
            ("name", &owner.name),
            ("uid", &owner.uid),
        ] {
            if value.is_empty() {
                problems.required(&format!("{path}.{field}"));
            }
        }
        controllers += usize::from(owner.controller == Some(true));
    }
    if controllers > 1 {
        problems.invalid(
            "metadata.ownerReferences",
            format!("{controllers} controllers"),
            "Only one reference can have Controller set to true",
        );
    }
}

/// Checks a label selector's keys and values, and its expressions' operators.
pub fn selector(path: &str, selector: &LabelSelector, problems: &mut Problems) {
    for (key, value) in selector.match_labels.iter().flatten() {
        problems.label(&format!("{path}.matchLabels"), key, value);
    }
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        problems.qualified_name(&format!("{at}.key"), &expression.key);
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => problems.required(&format!("{at}.values")),
            "Exists" | "DoesNotExist" if !values.is_empty() => problems.forbidden(
                &format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => problems.unsupported(
                &format!("{at}.operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
    }
}

/// Whether `selector` selects an object labelled `labels` (match labels and expressions).
pub fn selects(
    selector: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// Whether `selector` selects nothing in particular (it would select everything).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}
