//! The rules of the workload kinds: a StatefulSet (`ValidateStatefulSetSpec`), a
//! HorizontalPodAutoscaler (`autoscaling/v2`) and a PodDisruptionBudget.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricTarget};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Problems;
use super::meta;
use super::pod;

const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

pub fn stateful_set(set: &StatefulSet, problems: &mut Problems) {
    let Some(spec) = &set.spec else {
        problems.required("spec");
        return;
    };
    if spec.replicas.is_some_and(|r| r < 0) {
        problems.invalid(
            "spec.replicas",
            spec.replicas,
            "must be greater than or equal to 0",
        );
    }
    if let Some(policy) = &spec.pod_management_policy {
        problems.one_of(
            "spec.podManagementPolicy",
            policy,
            &["OrderedReady", "Parallel"],
        );
    }
    if let Some(strategy) = spec.update_strategy.as_ref().and_then(|s| s.type_.as_ref()) {
        problems.one_of(
            "spec.updateStrategy.type",
            strategy,
            &["RollingUpdate", "OnDelete"],
        );
    }
    if let Some(retention) = &spec.persistent_volume_claim_retention_policy {
        for (field, value) in [
            ("whenDeleted", &retention.when_deleted),
            ("whenScaled", &retention.when_scaled),
        ] {
            if let Some(value) = value {
                problems.one_of(
                    &format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                    value,
                    &["Retain", "Delete"],
                );
            }
        }
    }
    if meta::is_empty(&spec.selector) {
        problems.invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for statefulset",
        );
    } else {
        meta::selector("spec.selector", &spec.selector, problems);
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !meta::selects(&spec.selector, &labels) {
        problems.invalid(
            "spec.template.metadata.labels",
            &labels,
            "`selector` does not match template `labels`",
        );
    }
    let mut claims = BTreeSet::new();
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let at = format!("spec.volumeClaimTemplates[{i}]");
        let name = claim.metadata.name.clone().unwrap_or_default();
        problems.dns_subdomain(&format!("{at}.metadata.name"), &name);
        claims.insert(name);
        let Some(claim_spec) = &claim.spec else {
            problems.required(&format!("{at}.spec"));
            continue;
        };
        let modes = claim_spec.access_modes.as_deref().unwrap_or_default();
        if modes.is_empty() {
            problems.required(&format!("{at}.spec.accessModes"));
        }
        for mode in modes {
            problems.one_of(&format!("{at}.spec.accessModes"), mode, &ACCESS_MODES);
        }
        let storage = claim_spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        match storage.map(|q| (q, pod::quantity(q))) {
            None => problems.required(&format!("{at}.spec.resources[storage]")),
            Some((q, value)) if value.is_none_or(|v| v <= 0.0) => problems.invalid(
                &format!("{at}.spec.resources[storage]"),
                &q.0,
                "must be greater than zero",
            ),
            Some(_) => {}
        }
    }
    let Some(pod_spec) = &spec.template.spec else {
        problems.required("spec.template.spec");
        return;
    };
    if let Some(policy) = pod_spec.restart_policy.as_deref()
        && policy != "Always"
    {
        problems.unsupported("spec.template.spec.restartPolicy", policy, &["Always"]);
    }
    pod::pod_spec("spec.template.spec", pod_spec, &claims, problems);
}

pub fn autoscaler(autoscaler: &HorizontalPodAutoscaler, problems: &mut Problems) {
    let Some(spec) = &autoscaler.spec else {
        problems.required("spec");
        return;
    };
    let target = &spec.scale_target_ref;
    if target.kind.is_empty() {
        problems.required("spec.scaleTargetRef.kind");
    }
    if target.name.is_empty() {
        problems.required("spec.scaleTargetRef.name");
    }
    let min = spec.min_replicas.unwrap_or(1);
    if min < 1 {
        problems.invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        );
    }
    if spec.max_replicas < 1 {
        problems.invalid(
            "spec.maxReplicas",
            spec.max_replicas,
            "must be greater than 0",
        );
    } else if spec.max_replicas < min {
        problems.invalid(
            "spec.maxReplicas",
            spec.max_replicas,
            "must be greater than or equal to `minReplicas`",
        );
    }
    for (i, metric) in spec.metrics.iter().flatten().enumerate() {
        let at = format!("spec.metrics[{i}]");
        match metric.type_.as_str() {
            "Resource" => match &metric.resource {
                None => problems.required(&format!("{at}.resource")),
                Some(resource) => {
                    if resource.name.is_empty() {
                        problems.required(&format!("{at}.resource.name"));
                    }
                    let target = &resource.target;
                    let path = format!("{at}.resource.target");
                    metric_target(&path, target, problems);
                    match (&target.average_value, target.average_utilization) {
                        (None, None) => problems.required(&format!("{path}.averageUtilization")),
                        (Some(_), Some(_)) => problems.forbidden(
                            &path,
                            "may not set both a target raw value and a target utilization",
                        ),
                        _ => {}
                    }
                }
            },
            "Object" | "Pods" | "ContainerResource" | "External" => {}
            other => problems.unsupported(
                &format!("{at}.type"),
                other,
                &[
                    "ContainerResource",
                    "External",
                    "Object",
                    "Pods",
                    "Resource",
                ],
            ),
        }
    }
}

/// A metric's target, as `validateMetricTarget` checks it.
fn metric_target(at: &str, target: &MetricTarget, problems: &mut Problems) {
    problems.one_of(
        &format!("{at}.type"),
        &target.type_,
        &["Utilization", "Value", "AverageValue"],
    );
    if let Some(value) = target.average_utilization
        && value < 1
    {
        problems.invalid(
            &format!("{at}.averageUtilization"),
            value,
            "must be greater than 0",
        );
    }
    for (field, quantity) in [
        ("value", &target.value),
        ("averageValue", &target.average_value),
    ] {
        if let Some(quantity) = quantity
            && pod::quantity(quantity).is_none_or(|q| q <= 0.0)
        {
            problems.invalid(&format!("{at}.{field}"), &quantity.0, "must be positive");
        }
    }
}

pub fn disruption_budget(budget: &PodDisruptionBudget, problems: &mut Problems) {
    let Some(spec) = &budget.spec else {
        return;
    };
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        problems.invalid(
            "spec",
            "minAvailable and maxUnavailable",
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    for (field, value) in [
        ("minAvailable", &spec.min_available),
        ("maxUnavailable", &spec.max_unavailable),
    ] {
        match value {
            Some(IntOrString::Int(n)) if *n < 0 => problems.invalid(
                &format!("spec.{field}"),
                n,
                "must be greater than or equal to 0",
            ),
            Some(IntOrString::String(percent)) => {
                let valid = percent
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| p <= 100);
                if !valid {
                    problems.invalid(
                        &format!("spec.{field}"),
                        percent,
                        "must be an integer or a percentage between 0% and 100%",
                    );
                }
            }
            _ => {}
        }
    }
    if let Some(selector) = &spec.selector {
        meta::selector("spec.selector", selector, problems);
    }
}
