//! The rules of the configuration kinds: a Secret (its type's required keys), a ConfigMap
//! (keys and size) and a RoleBinding (its role and subjects).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;

use super::Problems;

/// The most bytes a Secret's or ConfigMap's data may hold.
const DATA_MAX: usize = 1024 * 1024;

/// Whether `key` may name an entry of a Secret or ConfigMap.
fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn keys<'a>(path: &str, keys: impl Iterator<Item = &'a String>, problems: &mut Problems) {
    for key in keys {
        if !is_config_key(key) {
            problems.invalid(
                &format!("{path}[{key}]"),
                key,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
    }
}

fn size(path: &str, total: usize, problems: &mut Problems) {
    if total > DATA_MAX {
        problems.forbidden(
            path,
            &format!("may not be more than 1048576 bytes (holds {total})"),
        );
    }
}

pub fn secret(secret: &Secret, problems: &mut Problems) {
    let data = secret.data.clone().unwrap_or_default();
    let strings = secret.string_data.clone().unwrap_or_default();
    keys("data", data.keys(), problems);
    keys("stringData", strings.keys(), problems);
    // `stringData` is merged over `data` before the size is counted, values only.
    let total: usize = data
        .iter()
        .filter(|(key, _)| !strings.contains_key(*key))
        .map(|(_, value)| value.0.len())
        .sum::<usize>()
        + strings.values().map(String::len).sum::<usize>();
    size("data", total, problems);
    let has = |key: &str| data.contains_key(key) || strings.contains_key(key);
    let required: &[&str] = match secret.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        _ => &[],
    };
    for key in required {
        if !has(key) {
            problems.required(&format!("data[{key}]"));
        }
    }
}

pub fn config_map(map: &ConfigMap, problems: &mut Problems) {
    let data = map.data.clone().unwrap_or_default();
    let binary = map.binary_data.clone().unwrap_or_default();
    keys("data", data.keys(), problems);
    keys("binaryData", binary.keys(), problems);
    for key in data.keys().filter(|k| binary.contains_key(*k)) {
        problems.invalid(
            &format!("data[{key}]"),
            key,
            "duplicate of key present in binaryData",
        );
    }
    let total: usize = data.values().map(String::len).sum::<usize>()
        + binary.values().map(|value| value.0.len()).sum::<usize>();
    size("data", total, problems);
}

pub fn role_binding(binding: &RoleBinding, problems: &mut Problems) {
    let role = &binding.role_ref;
    if role.api_group != "rbac.authorization.k8s.io" {
        problems.unsupported(
            "roleRef.apiGroup",
            &role.api_group,
            &["rbac.authorization.k8s.io"],
        );
    }
    problems.one_of("roleRef.kind", &role.kind, &["Role", "ClusterRole"]);
    if role.name.is_empty() {
        problems.required("roleRef.name");
    }
    for (i, subject) in binding.subjects.iter().flatten().enumerate() {
        let at = format!("subjects[{i}]");
        if subject.name.is_empty() {
            problems.required(&format!("{at}.name"));
        }
        match subject.kind.as_str() {
            "ServiceAccount" => {
                if subject.api_group.as_deref().is_some_and(|g| !g.is_empty()) {
                    problems.unsupported(
                        &format!("{at}.apiGroup"),
                        subject.api_group.as_deref().unwrap_or_default(),
                        &[""],
                    );
                }
                if !subject.name.is_empty() {
                    problems.dns_subdomain(&format!("{at}.name"), &subject.name);
                }
            }
            "User" | "Group" => {
                // An empty group is defaulted to the RBAC group before validation.
                let group = subject.api_group.as_deref().unwrap_or_default();
                if !group.is_empty() && group != "rbac.authorization.k8s.io" {
                    problems.unsupported(
                        &format!("{at}.apiGroup"),
                        subject.api_group.as_deref().unwrap_or_default(),
                        &["rbac.authorization.k8s.io"],
                    );
                }
            }
            other => problems.unsupported(
                &format!("{at}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
}
