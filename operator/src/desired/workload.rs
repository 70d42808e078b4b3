//! The dataplanes: their StatefulSet, autoscaler and disruption budget.
//!
//! Invariants:
//! - The StatefulSet leaves `replicas` to the HorizontalPodAutoscaler, which keeps them in
//!   the tenant's range.
//! - Pods run as a non-root user with a read-only root filesystem, no capabilities, no
//!   privilege escalation and the runtime's default seccomp profile.
//! - A pod's grace period covers the tunnel drain and then the archive flush; write-ahead log
//!   volumes are kept when pods go (scale-down or deletion), so no record is lost with them.

use std::collections::BTreeMap;

use imgate_crds::Tenant;
use imgate_crds::tenant::{ArchiveFailure, EncryptionMode, ForwardAfter, RetentionMode};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::network::{METRICS_PORT_NAME, TUNNEL_PORT_NAME};
use crate::names;
use crate::policy::{IDENTITY_FILE, POLICY_FILE, REVOKED_FILE};
use crate::settings::Settings;

/// The user and group the dataplane runs as (the image's non-root user).
pub const RUN_AS: i64 = 65532;
/// Where each pod keeps its write-ahead log and its tunnel state.
pub const DATA_DIR: &str = "/var/lib/imgate";
const POLICY_DIR: &str = "/etc/imgate/policy";
const TUNNEL_CA_DIR: &str = "/etc/imgate/tunnel-ca";
const INTERCEPTION_CA_DIR: &str = "/etc/imgate/interception-ca";
const EXTRA_ROOTS_DIR: &str = "/etc/imgate/extra-roots";
/// The key of the PEM roots in a tenant's `tls.extraRootsSecretRef`.
pub const EXTRA_ROOTS_KEY: &str = "ca.crt";

/// The names connectors may dial the tunnel by: the Service's in-cluster name, and the
/// tenant's name under the MSP's tunnel domain when there is one.
pub fn tunnel_names(tenant: &Tenant, settings: &Settings) -> Vec<String> {
    let name = names::tenant_name(tenant);
    let mut names = vec![format!(
        "{}.{}.svc",
        names::TUNNEL_SERVICE,
        names::namespace(name)
    )];
    if let Some(domain) = &settings.tunnel_domain {
        names.push(format!("{name}.{domain}"));
    }
    names
}

/// The dataplane's command line (`imgate up`, as the pod runs it).
pub fn dataplane_args(tenant: &Tenant, settings: &Settings) -> Vec<String> {
    let archive = &tenant.spec.archive;
    let mut args: Vec<String> = [
        "up",
        "--socks",
        "off",
        "--http",
        "off",
        "--tenant",
        names::tenant_name(tenant),
        "--data",
        DATA_DIR,
        "--policy",
        &format!("{POLICY_DIR}/{POLICY_FILE}"),
        "--policy-config-map",
        names::POLICY_CONFIG_MAP,
        "--metrics",
        &format!("0.0.0.0:{}", settings.metrics_port),
        "--tunnel",
        &format!("0.0.0.0:{}", settings.tunnel_port),
        "--tunnel-ca",
        TUNNEL_CA_DIR,
        "--tunnel-revoked",
        &format!("{POLICY_DIR}/{REVOKED_FILE}"),
        "--enrollment-secret",
        names::ENROLLMENT_SECRET,
        "--generations-secret",
        names::GENERATIONS_SECRET,
        "--interception-ca",
        INTERCEPTION_CA_DIR,
        "--drain-seconds",
        &settings.drain_seconds.to_string(),
        "--workers",
        "1",
        "--writer",
        "$(POD_NAME)",
        "--report-lease",
        "$(POD_NAME)",
        "--on-archive-failure",
        match archive.on_archive_failure {
            ArchiveFailure::Block => "block",
            ArchiveFailure::Pass => "pass",
        },
        "--forward-after",
        match archive.forward_after {
            ForwardAfter::Written => "written",
            ForwardAfter::Synced => "synced",
        },
        "--s3-bucket",
        &archive.s3.bucket,
        "--s3-region",
        &archive.s3.region,
        "--retention-days",
        &archive.retention.days.to_string(),
        "--retention-mode",
        match archive.retention.mode {
            RetentionMode::Compliance => "compliance",
            RetentionMode::Governance => "governance",
        },
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if let Some(endpoint) = &archive.s3.endpoint {
        args.extend(["--s3-endpoint".into(), endpoint.clone()]);
    }
    if let Some(prefix) = &archive.s3.prefix {
        args.extend(["--s3-prefix".into(), prefix.clone()]);
    }
    let encryption = &archive.s3.encryption;
    match encryption.mode {
        EncryptionMode::S3 => args.extend(["--s3-encryption".into(), "s3".into()]),
        EncryptionMode::Kms => {
            args.extend(["--s3-encryption".into(), "kms".into()]);
            // Without a key (which the API server's CEL rule refuses) the dataplane refuses
            // to start rather than write unencrypted.
            if let Some(key) = &encryption.kms_key_id {
                args.extend(["--s3-kms-key".into(), key.clone()]);
            }
        }
    }
    if tenant.spec.identity.is_some() {
        args.extend(["--identity".into(), format!("{POLICY_DIR}/{IDENTITY_FILE}")]);
    }
    if tenant.spec.alerts.is_some() {
        args.extend([
            "--alerts".into(),
            format!("{POLICY_DIR}/{}", super::alerts::ALERTS_FILE),
            "--secrets".into(),
            super::alerts::ALERT_SECRETS_DIR.into(),
        ]);
    }
    if extra_roots(tenant).is_some() {
        args.extend([
            "--extra-roots".into(),
            format!("{EXTRA_ROOTS_DIR}/{EXTRA_ROOTS_KEY}"),
        ]);
    }
    for name in tunnel_names(tenant, settings) {
        args.extend(["--tunnel-name".into(), name]);
    }
    for network in allowed_networks(tenant) {
        args.extend(["--allow-destination".into(), network.to_owned()]);
    }
    let destinations = tenant.spec.destinations.as_ref();
    // As with allowed networks, an entry the dataplane would refuse is left out (lint names
    // it), except that an allowed-domain or port list none of whose entries can be read
    // denies everything: leaving it out would open every domain or port.
    let domains = destinations
        .map(|d| d.allow_domains.as_slice())
        .unwrap_or_default();
    let readable_domains: Vec<&String> = domains
        .iter()
        .filter(|domain| {
            matches!(
                imgate_dataplane::proxy::destination::Rule::parse(domain),
                Ok(imgate_dataplane::proxy::destination::Rule::Domain(_))
            )
        })
        .collect();
    for domain in &readable_domains {
        args.extend(["--allow-destination".into(), (*domain).clone()]);
    }
    let closed = !domains.is_empty() && readable_domains.is_empty();
    for deny in destinations.iter().flat_map(|d| &d.deny) {
        if imgate_dataplane::proxy::destination::Rule::parse(deny).is_ok() {
            args.extend(["--deny-destination".into(), deny.clone()]);
        }
    }
    let ports = destinations.map(|d| d.ports.as_slice()).unwrap_or_default();
    let readable = ports
        .iter()
        .filter(|p| imgate_dataplane::proxy::destination::Ports::parse(p).is_ok());
    let mut any = false;
    for port in readable {
        args.extend(["--allow-port".into(), port.clone()]);
        any = true;
    }
    if closed || (!ports.is_empty() && !any) {
        for everywhere in ["0.0.0.0/0", "::/0"] {
            args.extend(["--deny-destination".into(), everywhere.into()]);
        }
    }
    args
}

/// The networks beyond the public internet that `tenant`'s sessions may reach
/// (`spec.destinations.allowNetworks`), those the dataplane can read: an entry it would refuse
/// (the CRD's pattern lets a few through, such as `10.20.0.0/1`) is left out rather than
/// have every dataplane refuse to start; `imgate policy lint` names it.
pub fn allowed_networks(tenant: &Tenant) -> impl Iterator<Item = &str> {
    tenant
        .spec
        .destinations
        .iter()
        .flat_map(|d| &d.allow_networks)
        .map(String::as_str)
        .filter(|network| imgate_dataplane::proxy::destination::Network::parse(network).is_ok())
}

/// The Secret with the tenant's extra upstream roots, if it names one.
fn extra_roots(tenant: &Tenant) -> Option<&str> {
    let tls = tenant.spec.tls.as_ref()?;
    tls.extra_roots_secret_ref.as_ref().map(|s| s.name.as_str())
}

/// The environment variable `name` holding the pod's field `path` (downward API).
fn pod_field((name, path): (&str, &str)) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

/// Where the dataplane exports its traces, and the resource attributes that say whose they
/// are (`$(POD_NAME)` is the variable set before it), when the settings name an endpoint.
fn traces_env(tenant: &Tenant, settings: &Settings) -> Vec<EnvVar> {
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Vec::new();
    };
    let name = names::tenant_name(tenant);
    let attributes = format!(
        "imgate.tenant={name},k8s.namespace.name={},k8s.pod.name=$(POD_NAME)",
        names::namespace(name)
    );
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_RESOURCE_ATTRIBUTES", attributes),
    ]
    .into_iter()
    .map(|(variable, value)| EnvVar {
        name: variable.into(),
        value: Some(value),
        value_from: None,
    })
    .collect()
}

/// The LDAP bind from the tenant's `identity.ldap.bindSecretRef`, as the variables `imgate
/// up` reads it from.
fn ldap_bind_env(tenant: &Tenant) -> Vec<EnvVar> {
    let secret = tenant
        .spec
        .identity
        .as_ref()
        .and_then(|identity| identity.ldap.as_ref())
        .and_then(|ldap| ldap.bind_secret_ref.as_ref());
    let Some(secret) = secret else {
        return Vec::new();
    };
    [
        ("IMGATE_LDAP_BIND_DN", "bindDN"),
        ("IMGATE_LDAP_PASSWORD", "password"),
    ]
    .into_iter()
    .map(|(variable, key)| EnvVar {
        name: variable.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    })
    .collect()
}

fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// A probe of `path` on the metrics port, failing after `failures` misses: `/readyz` fails
/// while the dataplane's archive log cannot write (it tries again by itself), so that the pod
/// is taken out of its Services, and `/healthz` when only a restart helps (an fsync failed),
/// so that the pod is restarted.
fn probe(path: &str, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// Spreads `tenant`'s dataplanes over the values of node label `key`, counting only the pods
/// of the same revision (`matchLabelKeys`), so a rolling update spreads its new pods too. The
/// API server refuses `matchLabelKeys` without a `labelSelector`, which it narrows.
fn spread(tenant: &Tenant, key: &str) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(names::pod_selector(tenant)),
        match_label_keys: Some(vec!["controller-revision-hash".into()]),
        ..TopologySpreadConstraint::default()
    }
}

fn container(tenant: &Tenant, settings: &Settings) -> Container {
    let credentials = tenant.spec.archive.s3.credentials_secret_ref.as_ref();
    Container {
        name: names::DATAPLANE.into(),
        image: Some(settings.image.clone()),
        args: Some(dataplane_args(tenant, settings)),
        ports: Some(vec![
            ContainerPort {
                name: Some(TUNNEL_PORT_NAME.into()),
                container_port: settings.tunnel_port.into(),
                protocol: Some("UDP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(METRICS_PORT_NAME.into()),
                container_port: settings.metrics_port.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(
            [("POD_NAME", "metadata.name"), ("POD_UID", "metadata.uid")]
                .into_iter()
                .map(pod_field)
                .chain(ldap_bind_env(tenant))
                .chain(traces_env(tenant, settings))
                .collect(),
        ),
        env_from: credentials.map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 6)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[
                ("cpu", &settings.cpu_request),
                ("memory", &settings.memory_request),
            ])),
            limits: Some(quantities(&[("memory", &settings.memory_limit)])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(
            [
                mount("data", DATA_DIR, false),
                mount("policy", POLICY_DIR, true),
                mount("tunnel-ca", TUNNEL_CA_DIR, true),
                mount("interception-ca", INTERCEPTION_CA_DIR, true),
                mount("tmp", "/tmp", false),
            ]
            .into_iter()
            .chain(extra_roots(tenant).map(|_| mount("extra-roots", EXTRA_ROOTS_DIR, true)))
            .chain(
                super::alerts::secrets_volume(tenant)
                    .map(|v| mount(&v.name, super::alerts::ALERT_SECRETS_DIR, true)),
            )
            .collect(),
        ),
        ..Container::default()
    }
}

pub fn stateful_set(tenant: &Tenant, settings: &Settings) -> StatefulSet {
    let name = names::tenant_name(tenant);
    let interception = tenant
        .spec
        .tls
        .as_ref()
        .and_then(|tls| tls.interception_ca_secret_ref.as_ref())
        .map_or(names::INTERCEPTION_CA_SECRET.to_owned(), |s| s.name.clone());
    let mut volumes = vec![
        Volume {
            name: "policy".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::POLICY_CONFIG_MAP.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume(
            "tunnel-ca",
            names::TUNNEL_CA_SECRET,
            &[("ca.pem", "ca.pem"), ("ca.key", "ca.key")],
        ),
        secret_volume(
            "interception-ca",
            &interception,
            &[("tls.crt", "ca.pem"), ("tls.key", "ca.key")],
        ),
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    if let Some(secret) = extra_roots(tenant) {
        volumes.push(secret_volume(
            "extra-roots",
            secret,
            &[(EXTRA_ROOTS_KEY, EXTRA_ROOTS_KEY)],
        ));
    }
    volumes.extend(super::alerts::secrets_volume(tenant));
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(names::labels(name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: settings.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(quantities(&[("storage", &settings.wal_size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: names::meta(tenant, names::DATAPLANE, true),
        spec: Some(StatefulSetSpec {
            service_name: Some(names::PODS_SERVICE.into()),
            pod_management_policy: Some("Parallel".into()),
            selector: names::pod_selector(tenant),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::pod_labels(name)),
                    // The dataplane reads its alerts at start: a change rolls the pods.
                    annotations: tenant.spec.alerts.as_ref().map(|alerts| {
                        BTreeMap::from([(
                            super::alerts::ALERTS_REVISION.into(),
                            super::alerts::revision(alerts),
                        )])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(names::SERVICE_ACCOUNT.into()),
                    // The token lets a dataplane redeem the tenant's enrollment token.
                    automount_service_account_token: Some(true),
                    termination_grace_period_seconds: Some(
                        (settings.drain_seconds + settings.flush_seconds).into(),
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    topology_spread_constraints: Some(vec![
                        spread(tenant, "kubernetes.io/hostname"),
                        spread(tenant, "topology.kubernetes.io/zone"),
                    ]),
                    containers: vec![container(tenant, settings)],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

pub fn autoscaler(tenant: &Tenant) -> HorizontalPodAutoscaler {
    let dataplane = &tenant.spec.dataplane;
    HorizontalPodAutoscaler {
        metadata: names::meta(tenant, names::DATAPLANE, true),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "StatefulSet".into(),
                name: names::DATAPLANE.into(),
            },
            min_replicas: Some(dataplane.replicas.min),
            max_replicas: dataplane.replicas.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(dataplane.target_cpu_utilization),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

pub fn disruption_budget(tenant: &Tenant) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: names::meta(tenant, names::DATAPLANE, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(names::pod_selector(tenant)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
