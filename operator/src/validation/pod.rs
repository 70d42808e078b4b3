//! The rules of a pod template (`ValidatePodSpec` and what it calls): containers, their
//! ports, environment, probes, mounts and resources; volumes; security context; topology
//! spread constraints.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, PodSpec, Probe, ResourceRequirements, TopologySpreadConstraint,
    Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Problems;
use super::meta;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// The pod fields the downward API may put in an environment variable.
const POD_FIELDS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Checks pod spec `spec` at `path`, whose containers may also mount the volumes named
/// `claims` (a StatefulSet's volume claim templates).
pub fn pod_spec(path: &str, spec: &PodSpec, claims: &BTreeSet<String>, problems: &mut Problems) {
    let mut volumes: BTreeSet<String> = claims.clone();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        problems.dns_label(&format!("{at}.name"), &volume.name);
        if !volumes.insert(volume.name.clone()) {
            problems.duplicate(&format!("{at}.name"), &volume.name);
        }
        volume_source(&at, volume, problems);
    }
    if spec.containers.is_empty() {
        problems.required(&format!("{path}.containers"));
    }
    let mut names = BTreeSet::new();
    for (i, container) in spec.containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        problems.dns_label(&format!("{at}.name"), &container.name);
        if !names.insert(container.name.as_str()) {
            problems.duplicate(&format!("{at}.name"), &container.name);
        }
        self::container(&at, container, &volumes, problems);
    }
    if let Some(policy) = &spec.restart_policy {
        problems.one_of(
            &format!("{path}.restartPolicy"),
            policy,
            &["Always", "OnFailure", "Never"],
        );
    }
    if let Some(account) = &spec.service_account_name {
        problems.dns_subdomain(&format!("{path}.serviceAccountName"), account);
    }
    for (key, value) in spec.node_selector.iter().flatten() {
        problems.label(&format!("{path}.nodeSelector"), key, value);
    }
    if let Some(seccomp) = spec
        .security_context
        .as_ref()
        .and_then(|c| c.seccomp_profile.as_ref())
    {
        let at = format!("{path}.securityContext.seccompProfile");
        problems.one_of(
            &format!("{at}.type"),
            &seccomp.type_,
            &["RuntimeDefault", "Unconfined", "Localhost"],
        );
        match (seccomp.type_.as_str(), &seccomp.localhost_profile) {
            ("Localhost", None) => problems.required(&format!("{at}.localhostProfile")),
            ("RuntimeDefault" | "Unconfined", Some(_)) => problems.forbidden(
                &format!("{at}.localhostProfile"),
                "can only be set if type is Localhost",
            ),
            _ => {}
        }
    }
    let mut spread = BTreeSet::new();
    for (i, constraint) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{path}.topologySpreadConstraints[{i}]");
        topology_spread(&at, constraint, problems);
        let pair = (
            constraint.topology_key.clone(),
            constraint.when_unsatisfiable.clone(),
        );
        if !spread.insert(pair.clone()) {
            problems.duplicate(
                &format!("{at}.{{topologyKey, whenUnsatisfiable}}"),
                format!("{{{}, {}}}", pair.0, pair.1),
            );
        }
    }
}

fn volume_source(at: &str, volume: &Volume, problems: &mut Problems) {
    // Every field of a volume but its name is a source, whichever of the many kinds.
    let sources = serde_json::to_value(volume)
        .ok()
        .and_then(|value| value.as_object().map(|fields| fields.len()))
        .unwrap_or(1)
        .saturating_sub(1);
    match sources {
        0 => problems.required(at),
        1 => {}
        _ => problems.forbidden(at, "may not specify more than 1 volume type"),
    }
    if let Some(secret) = &volume.secret {
        if secret.secret_name.as_deref().is_none_or(str::is_empty) {
            problems.required(&format!("{at}.secret.secretName"));
        }
        file_mode(
            &format!("{at}.secret.defaultMode"),
            secret.default_mode,
            problems,
        );
        items(
            &format!("{at}.secret.items"),
            secret.items.as_deref(),
            problems,
        );
    }
    if let Some(map) = &volume.config_map {
        if map.name.is_empty() {
            problems.required(&format!("{at}.configMap.name"));
        }
        file_mode(
            &format!("{at}.configMap.defaultMode"),
            map.default_mode,
            problems,
        );
        items(
            &format!("{at}.configMap.items"),
            map.items.as_deref(),
            problems,
        );
    }
    if let Some(limit) = volume
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.as_ref())
        && quantity(limit).is_none_or(|q| q < 0.0)
    {
        problems.invalid(
            &format!("{at}.emptyDir.sizeLimit"),
            &limit.0,
            "must be a quantity greater than or equal to 0",
        );
    }
}

fn file_mode(path: &str, mode: Option<i32>, problems: &mut Problems) {
    if mode.is_some_and(|m| !(0..=0o777).contains(&m)) {
        problems.invalid(
            path,
            mode,
            "must be a number between 0 and 0777 (octal), both inclusive",
        );
    }
}

fn items(path: &str, items: Option<&[KeyToPath]>, problems: &mut Problems) {
    for (i, item) in items.into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        if item.key.is_empty() {
            problems.required(&format!("{at}.key"));
        }
        let file = &item.path;
        if file.is_empty() {
            problems.required(&format!("{at}.path"));
        } else if file.starts_with('/') {
            problems.invalid(&format!("{at}.path"), file, "must be a relative path");
        } else if file.split('/').any(|part| part == "..") {
            problems.invalid(&format!("{at}.path"), file, "must not contain '..'");
        }
        file_mode(&format!("{at}.mode"), item.mode, problems);
    }
}

fn container(at: &str, container: &Container, volumes: &BTreeSet<String>, problems: &mut Problems) {
    if container.image.as_deref().is_none_or(str::is_empty) {
        problems.required(&format!("{at}.image"));
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let path = format!("{at}.ports[{i}]");
        problems.port_number(&format!("{path}.containerPort"), port.container_port);
        if let Some(protocol) = &port.protocol {
            problems.one_of(&format!("{path}.protocol"), protocol, &PROTOCOLS);
        }
        if let Some(name) = &port.name {
            problems.port_name(&format!("{path}.name"), name);
            if !port_names.insert(name.as_str()) {
                problems.duplicate(&format!("{path}.name"), name);
            }
        }
    }
    for (i, var) in container.env.iter().flatten().enumerate() {
        env_var(&format!("{at}.env[{i}]"), var, problems);
    }
    for (i, source) in container.env_from.iter().flatten().enumerate() {
        let path = format!("{at}.envFrom[{i}]");
        match (&source.config_map_ref, &source.secret_ref) {
            (Some(_), Some(_)) => problems.forbidden(
                &path,
                "may not have more than one field specified at a time",
            ),
            (None, None) => problems.required(&path),
            (Some(map), None) if map.name.is_empty() => {
                problems.required(&format!("{path}.configMapRef.name"))
            }
            (None, Some(secret)) if secret.name.is_empty() => {
                problems.required(&format!("{path}.secretRef.name"))
            }
            _ => {}
        }
    }
    let mut mounted = BTreeSet::new();
    for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let path = format!("{at}.volumeMounts[{i}]");
        if !volumes.contains(&mount.name) {
            problems.not_found(&format!("{path}.name"), &mount.name);
        }
        if mount.mount_path.is_empty() {
            problems.required(&format!("{path}.mountPath"));
        } else if !mounted.insert(mount.mount_path.as_str()) {
            problems.invalid(
                &format!("{path}.mountPath"),
                &mount.mount_path,
                "must be unique",
            );
        }
    }
    for (field, probe) in [
        ("readinessProbe", &container.readiness_probe),
        ("livenessProbe", &container.liveness_probe),
        ("startupProbe", &container.startup_probe),
    ] {
        if let Some(probe) = probe {
            self::probe(&format!("{at}.{field}"), probe, problems);
        }
    }
    if let Some(resources) = &container.resources {
        self::resources(&format!("{at}.resources"), resources, problems);
    }
}

fn env_var(path: &str, var: &EnvVar, problems: &mut Problems) {
    // As clusters since 1.32 check them (relaxed environment variable names): any printable
    // ASCII but '='. Older clusters also refuse a leading digit and most punctuation.
    let name_ok = !var.name.is_empty()
        && var
            .name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=');
    if !name_ok {
        problems.invalid(
            &format!("{path}.name"),
            &var.name,
            "a valid environment variable name must consist only of printable ASCII characters other than '='",
        );
    }
    let Some(from) = &var.value_from else {
        return;
    };
    if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
        problems.invalid(
            &format!("{path}.valueFrom"),
            "",
            "may not be specified when `value` is not empty",
        );
    }
    let sources = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => problems.invalid(
            &format!("{path}.valueFrom"),
            "",
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ),
        1 => {}
        _ => problems.invalid(
            &format!("{path}.valueFrom"),
            "",
            "may not have more than one field specified at a time",
        ),
    }
    if let Some(field) = &from.field_ref {
        let at = format!("{path}.valueFrom.fieldRef.fieldPath");
        let labelled = ["metadata.labels['", "metadata.annotations['"]
            .iter()
            .any(|prefix| field.field_path.starts_with(prefix) && field.field_path.ends_with("']"));
        if field.field_path.is_empty() {
            problems.required(&at);
        } else if !labelled && !POD_FIELDS.contains(&field.field_path.as_str()) {
            problems.unsupported(&at, &field.field_path, &POD_FIELDS);
        }
    }
    if let Some(secret) = &from.secret_key_ref {
        if secret.name.is_empty() {
            problems.required(&format!("{path}.valueFrom.secretKeyRef.name"));
        }
        if secret.key.is_empty() {
            problems.required(&format!("{path}.valueFrom.secretKeyRef.key"));
        }
    }
}

fn probe(path: &str, probe: &Probe, problems: &mut Problems) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => problems.required_saying(path, "must specify a handler type"),
        1 => {}
        _ => problems.forbidden(path, "may not specify more than 1 handler type"),
    }
    if let Some(get) = &probe.http_get {
        match &get.port {
            IntOrString::Int(number) => {
                problems.port_number(&format!("{path}.httpGet.port"), *number)
            }
            IntOrString::String(name) => problems.port_name(&format!("{path}.httpGet.port"), name),
        }
    }
    for (field, value) in [
        ("periodSeconds", probe.period_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
        ("timeoutSeconds", probe.timeout_seconds),
    ] {
        if value.is_some_and(|v| v < 0) {
            problems.invalid(
                &format!("{path}.{field}"),
                value,
                "must be greater than or equal to 0",
            );
        }
    }
}

fn resources(path: &str, resources: &ResourceRequirements, problems: &mut Problems) {
    let limits = resources.limits.clone().unwrap_or_default();
    for (field, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (name, value) in list.iter().flatten() {
            if quantity(value).is_none_or(|q| q < 0.0) {
                problems.invalid(
                    &format!("{path}.{field}[{name}]"),
                    &value.0,
                    "must be a quantity greater than or equal to 0",
                );
            }
        }
    }
    for (name, request) in resources.requests.iter().flatten() {
        let Some(limit) = limits.get(name) else {
            continue;
        };
        if let (Some(r), Some(l)) = (quantity(request), quantity(limit))
            && r > l
        {
            problems.invalid(
                &format!("{path}.requests[{name}]"),
                &request.0,
                &format!("must be less than or equal to {name} limit of {}", limit.0),
            );
        }
    }
}

/// A quantity's value (`500m`, `128Mi`, `1e3`, `2`), or `None` if it is not one.
pub fn quantity(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    if let Ok(plain) = text.parse::<f64>() {
        return plain.is_finite().then_some(plain);
    }
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(number * scale)
}

fn topology_spread(at: &str, constraint: &TopologySpreadConstraint, problems: &mut Problems) {
    if constraint.max_skew <= 0 {
        problems.invalid(
            &format!("{at}.maxSkew"),
            constraint.max_skew,
            "must be greater than zero",
        );
    }
    if constraint.topology_key.is_empty() {
        problems.required(&format!("{at}.topologyKey"));
    }
    problems.one_of(
        &format!("{at}.whenUnsatisfiable"),
        &constraint.when_unsatisfiable,
        &["DoNotSchedule", "ScheduleAnyway"],
    );
    if let Some(domains) = constraint.min_domains {
        if domains <= 0 {
            problems.invalid(
                &format!("{at}.minDomains"),
                domains,
                "must be greater than 0",
            );
        } else if constraint.when_unsatisfiable != "DoNotSchedule" {
            problems.invalid(
                &format!("{at}.minDomains"),
                domains,
                "can only use minDomains if whenUnsatisfiable=DoNotSchedule",
            );
        }
    }
    if let Some(selector) = &constraint.label_selector {
        meta::selector(&format!("{at}.labelSelector"), selector, problems);
    }
    let keys = constraint.match_label_keys.as_deref().unwrap_or_default();
    if keys.is_empty() {
        return;
    }
    let Some(selector) = &constraint.label_selector else {
        problems.forbidden(
            &format!("{at}.matchLabelKeys"),
            "must not be specified when labelSelector is not set",
        );
        return;
    };
    let selected: BTreeSet<&str> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .chain(
            selector
                .match_expressions
                .iter()
                .flatten()
                .map(|e| e.key.as_str()),
        )
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let path = format!("{at}.matchLabelKeys[{i}]");
        problems.qualified_name(&path, key);
        if selected.contains(key.as_str()) {
            problems.invalid(
                &path,
                key,
                "exists in both matchLabelKeys and labelSelector",
            );
        }
    }
}
