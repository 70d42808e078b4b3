//! Each rule refuses what the API server refuses, with its words, and passes what it accepts.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn of<K: DeserializeOwned + Validate>(object: Value) -> Vec<String> {
    let typed: K = serde_json::from_value(object).expect("the type's shape");
    problems_of(&typed)
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn has(problems: &[String], wanted: &str) -> bool {
    problems.iter().any(|p| p.contains(wanted))
}

/// A StatefulSet the API server accepts, with `spec.template.spec` merged from `pod`.
fn stateful_set(pod: Value) -> Value {
    let mut object = json!({
        "metadata": {"name": "dataplane", "namespace": "imgate-acme", "labels": {"imgate.io/tenant": "acme"}},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "serviceName": "pods",
            "template": {
                "metadata": {"labels": {"app": "x", "imgate.io/tenant": "acme"}},
                "spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "metrics", "containerPort": 9464}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    });
    if let (Some(spec), Some(extra)) = (
        object["spec"]["template"]["spec"].as_object_mut(),
        pod.as_object(),
    ) {
        spec.extend(extra.clone());
    }
    object
}

#[test]
fn a_valid_stateful_set_passes() {
    let problems = of::<StatefulSet>(stateful_set(json!({})));
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn match_label_keys_without_a_label_selector_are_refused_as_every_cluster_refuses_them() {
    let unselected = json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "matchLabelKeys": ["controller-revision-hash"]},
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
         "matchLabelKeys": ["controller-revision-hash"]}]});
    let problems = of::<StatefulSet>(stateful_set(unselected));
    assert_eq!(
        problems,
        [
            "spec.template.spec.topologySpreadConstraints[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set",
            "spec.template.spec.topologySpreadConstraints[1].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set",
        ]
    );
    let overlapping = json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "x"}}, "matchLabelKeys": ["app"]},
        {"maxSkew": 0, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "x"}}, "minDomains": 2}]});
    let problems = of::<StatefulSet>(stateful_set(overlapping));
    assert!(
        has(
            &problems,
            "matchLabelKeys[0]: Invalid value: \"app\": exists in both"
        ),
        "{problems:?}"
    );
    assert!(has(&problems, "[1].maxSkew: Invalid value"), "{problems:?}");
    assert!(has(&problems, "[1].minDomains"), "{problems:?}");
    assert!(
        has(
            &problems,
            "[1].{topologyKey, whenUnsatisfiable}: Duplicate value"
        ),
        "{problems:?}"
    );
    let selected = json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "x"}}, "matchLabelKeys": ["controller-revision-hash"]}]});
    assert!(of::<StatefulSet>(stateful_set(selected)).is_empty());
}

#[test]
fn a_pod_template_refers_only_to_what_it_declares() {
    let pod = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "",
            "ports": [{"name": "a-very-long-port-name", "containerPort": 70000, "protocol": "QUIC"}],
            "env": [{"name": "A=B", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}},
                    {"name": "1.relaxed-name_ok", "value": "v"}],
            "envFrom": [{}],
            "volumeMounts": [{"name": "missing", "mountPath": "/a"}, {"name": "data", "mountPath": "/a"}],
            "readinessProbe": {"periodSeconds": 5},
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}],
        "volumes": [{"name": "s", "secret": {"secretName": "x", "defaultMode": 1024,
                     "items": [{"key": "k", "path": "../escape"}]}}, {"name": "s", "emptyDir": {}, "configMap": {"name": "m"}}],
        "securityContext": {"seccompProfile": {"type": "Localhost"}}
    });
    let problems = of::<StatefulSet>(stateful_set(pod));
    assert!(!has(&problems, "env[1]"), "{problems:#?}");
    for wanted in [
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\"",
        "containers[0].image: Required value",
        "ports[0].containerPort: Invalid value: 70000",
        "ports[0].protocol: Unsupported value: \"QUIC\"",
        "ports[0].name: Invalid value: \"a-very-long-port-name\"",
        "env[0].name: Invalid value: \"A=B\"",
        "env[0].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
        "env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\"",
        "envFrom[0]: Required value",
        "volumeMounts[0].name: Not found: \"missing\"",
        "volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
        "readinessProbe: Required value: must specify a handler type",
        "resources.requests[memory]: Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi",
        "volumes[0].secret.defaultMode: Invalid value",
        "volumes[0].secret.items[0].path: Invalid value: \"../escape\": must not contain '..'",
        "volumes[1].name: Duplicate value: \"s\"",
        "volumes[1]: Forbidden: may not specify more than 1 volume type",
        "seccompProfile.localhostProfile: Required value",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
}

#[test]
fn a_selector_must_select_the_template_and_claims_must_ask_for_storage() {
    let mut object = stateful_set(json!({}));
    object["spec"]["selector"] = json!({"matchLabels": {"app": "y"}});
    object["spec"]["podManagementPolicy"] = json!("Sometimes");
    object["spec"]["volumeClaimTemplates"][0]["spec"] = json!({"accessModes": []});
    let problems = of::<StatefulSet>(object);
    for wanted in [
        "spec.template.metadata.labels: Invalid value",
        "`selector` does not match template `labels`",
        "spec.podManagementPolicy: Unsupported value: \"Sometimes\"",
        "spec.volumeClaimTemplates[0].spec.accessModes: Required value",
        "spec.volumeClaimTemplates[0].spec.resources[storage]: Required value",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
}

#[test]
fn what_a_cluster_accepts_passes() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let role = of::<ClusterRole>(json!({"metadata": {"name": "system:controller:imgate"}}));
    assert!(role.is_empty(), "RBAC names are path segments: {role:?}");
    let pod = json!({
        "containers": [
            {"name": "a", "image": "i", "ports": [{"name": "http", "containerPort": 80}]},
            {"name": "b", "image": "i", "ports": [{"name": "http", "containerPort": 81}]}],
        "volumes": [{"name": "cache", "gcePersistentDisk": {"pdName": "disk"}}]
    });
    let problems = of::<StatefulSet>(stateful_set(pod));
    assert!(problems.is_empty(), "{problems:#?}");
    let policy = of::<NetworkPolicy>(json!({"metadata": {"name": "n"},
        "spec": {"policyTypes": ["Egress", "Egress"]}}));
    assert!(policy.is_empty(), "{policy:?}");
    let exact = "x".repeat(1024 * 1024);
    let map = of::<ConfigMap>(
        json!({"metadata": {"name": "policy"}, "data": {"a-long-key-of-its-own": exact}}),
    );
    assert!(
        map.is_empty(),
        "keys do not count towards the size: {map:?}"
    );
    let half = "x".repeat(700 * 1024);
    let secret = of::<Secret>(json!({"metadata": {"name": "s"},
        "data": {"k": base64_of(&half)}, "stringData": {"k": half}}));
    assert!(
        secret.is_empty(),
        "stringData replaces data of the same key: {secret:?}"
    );
    let hpa = of::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"}, "spec": {
        "scaleTargetRef": {"kind": "StatefulSet", "name": "s"}, "maxReplicas": 2,
        "metrics": [{"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "Value", "averageValue": "1Gi"}}}]}}));
    assert!(hpa.is_empty(), "{hpa:?}");
    let service = of::<Service>(json!({"metadata": {"name": "s"}, "spec": {
        "externalIPs": ["198.51.100.1"], "externalTrafficPolicy": "Local",
        "ports": [{"port": 80, "nodePort": 0}]}}));
    assert!(service.is_empty(), "{service:?}");
    let binding = of::<RoleBinding>(json!({"metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "jane"}]}));
    assert!(
        binding.is_empty(),
        "an empty group is defaulted: {binding:?}"
    );
    let annotated = of::<ConfigMap>(
        json!({"metadata": {"name": "m", "annotations": {"Example.COM/Owner": "x"}}}),
    );
    assert!(annotated.is_empty(), "{annotated:?}");
    let spread = json!({"terminationGracePeriodSeconds": -1, "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "Not A Label Key", "whenUnsatisfiable": "ScheduleAnyway"}]});
    let problems = of::<StatefulSet>(stateful_set(spread));
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn metadata_names_labels_and_owners_follow_their_formats() {
    let problems = of::<ConfigMap>(json!({"metadata": {
        "name": "Policy_1", "namespace": "imgate-acme",
        "labels": {"imgate.io/tenant": "-bad-", "bad key!": "v"},
        "ownerReferences": [
            {"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "name": "a", "uid": "", "controller": true},
            {"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "name": "b", "uid": "u", "controller": true}]}}));
    for wanted in [
        "metadata.name: Invalid value: \"Policy_1\"",
        "metadata.labels: Invalid value: \"-bad-\"",
        "metadata.labels: Invalid value: \"bad key!\"",
        "metadata.ownerReferences[0].uid: Required value",
        "Only one reference can have Controller set to true",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
    let service =
        of::<Service>(json!({"metadata": {"name": "1tunnel"}, "spec": {"ports": [{"port": 1}]}}));
    assert!(
        has(&service, "metadata.name: Invalid value: \"1tunnel\""),
        "{service:?}"
    );
}

#[test]
fn a_tls_secret_needs_its_keys_and_a_config_map_fits_in_a_mebibyte() {
    let problems =
        of::<Secret>(json!({"metadata": {"name": "interception-ca"}, "type": "kubernetes.io/tls"}));
    assert_eq!(
        problems,
        [
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value"
        ]
    );
    let filled = of::<Secret>(
        json!({"metadata": {"name": "ca"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}),
    );
    assert!(filled.is_empty(), "{filled:?}");
    let big = "x".repeat(1024 * 1024 + 1);
    let problems = of::<ConfigMap>(
        json!({"metadata": {"name": "policy"}, "data": {"policy.yaml": big, "bad/key": ""}}),
    );
    assert!(
        has(&problems, "data[bad/key]: Invalid value"),
        "{problems:?}"
    );
    assert!(
        has(
            &problems,
            "data: Forbidden: may not be more than 1048576 bytes"
        ),
        "{problems:?}"
    );
}

#[test]
fn services_and_network_policies_follow_their_type() {
    let problems = of::<Service>(json!({"metadata": {"name": "tunnel"}, "spec": {
        "type": "ClusterIP", "externalTrafficPolicy": "Local", "clusterIP": "None",
        "ports": [{"port": 4433, "protocol": "UDP", "nodePort": 30000}, {"name": "b", "port": 4433, "protocol": "UDP", "targetPort": "Tunnel"}]}}));
    for wanted in [
        "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
        "spec.ports[0].name: Required value",
        "spec.ports[0].nodePort: Forbidden",
        "spec.ports[1]: Duplicate value: \"4433/UDP\"",
        "spec.ports[1].targetPort: Invalid value: \"Tunnel\"",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
    let headless_lb = of::<Service>(json!({"metadata": {"name": "x"}, "spec": {
        "type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 1}]}}));
    assert!(has(
        &headless_lb,
        "may only be set to 'None' for ClusterIP services"
    ));
    let problems = of::<NetworkPolicy>(json!({"metadata": {"name": "n"}, "spec": {
        "policyTypes": ["Ingress", "Ingress", "Sideways"],
        "egress": [{"ports": [{"port": 80, "endPort": 79}],
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16"]},
                            "podSelector": {}},
                           {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "fc00::/7"]}},
                           {"ipBlock": {"cidr": "300.0.0.0/8"}}]}]}}));
    for wanted in [
        "spec.policyTypes[2]: Unsupported value: \"Sideways\"",
        "spec.egress[0].ports[0].endPort: Invalid value: 79",
        "spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer",
        "spec.egress[0].to[1].ipBlock.except[1]: Invalid value: \"fc00::/7\"",
        "spec.egress[0].to[2].ipBlock.cidr: Invalid value: \"300.0.0.0/8\"",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
    assert!(
        !has(&problems, "to[1].ipBlock.except[0]"),
        "10.0.0.0/8 lies within 0.0.0.0/0: {problems:#?}"
    );
}

#[test]
fn scaling_disruption_and_bindings_follow_their_rules() {
    let problems = of::<HorizontalPodAutoscaler>(json!({"metadata": {"name": "h"}, "spec": {
        "scaleTargetRef": {"kind": "StatefulSet", "name": ""}, "minReplicas": 3, "maxReplicas": 2,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Percent", "averageUtilization": 5}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization",
                        "averageUtilization": 5, "averageValue": "1Gi"}}}]}}));
    for wanted in [
        "spec.scaleTargetRef.name: Required value",
        "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
        "spec.metrics[0].resource.target.averageUtilization: Required value",
        "spec.metrics[1].resource.target.type: Unsupported value: \"Percent\"",
        "spec.metrics[2].resource.target: Forbidden: may not set both",
    ] {
        assert!(
            has(&problems, wanted),
            "missing {wanted:?} in {problems:#?}"
        );
    }
    let problems = of::<PodDisruptionBudget>(json!({"metadata": {"name": "p"}, "spec": {
        "minAvailable": 1, "maxUnavailable": "150%"}}));
    assert!(has(&problems, "cannot be both set"), "{problems:?}");
    assert!(
        has(&problems, "spec.maxUnavailable: Invalid value: \"150%\""),
        "{problems:?}"
    );
    let problems = of::<RoleBinding>(json!({"metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Secret", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa", "apiGroup": "rbac.authorization.k8s.io"}]}));
    assert!(
        has(&problems, "roleRef.kind: Unsupported value: \"Secret\""),
        "{problems:?}"
    );
    assert!(
        has(&problems, "subjects[0].apiGroup: Unsupported value"),
        "{problems:?}"
    );
}
