//! How the dataplanes are reached and what they may reach: the tunnel, metrics and pods'
//! Services, and the NetworkPolicy.
//!
//! Invariants: connectors reach only the tunnel port, over UDP, and the tunnel Service keeps
//! their source addresses (`externalTrafficPolicy: Local`), which the archive records; only
//! pods in the metrics namespace reach the metrics port; the dataplanes reach DNS, the API
//! server (TCP 443 and 6443, at the operator's `--api-server-cidr` ranges only: with none, at
//! no address), and addresses outside the cluster's private ranges and the link-local
//! range (so not the cloud's instance metadata), which is where IM servers and the object
//! store are, and the trace collector's port at any address when the settings name one.

use std::collections::BTreeMap;

use imgate_crds::Tenant;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::settings::{Settings, otlp_port};

/// The port names on the pods and Services.
pub const TUNNEL_PORT_NAME: &str = "tunnel";
/// See [`TUNNEL_PORT_NAME`].
pub const METRICS_PORT_NAME: &str = "metrics";

/// Private, shared and link-local IPv4 and IPv6 ranges: the cluster's own networks and the
/// instance metadata service, which dataplanes have no business reaching.
const PRIVATE_V4: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];
const PRIVATE_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];

fn port(name: &str, protocol: &str, number: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port: number.into(),
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    }
}

fn service(tenant: &Tenant, name: &str, spec: ServiceSpec) -> Service {
    Service {
        metadata: names::meta(tenant, name, true),
        spec: Some(ServiceSpec {
            selector: Some(names::selector(names::tenant_name(tenant))),
            ..spec
        }),
        ..Service::default()
    }
}

/// The headless Service that gives the StatefulSet's pods stable names.
pub fn pods_service(tenant: &Tenant, settings: &Settings) -> Service {
    service(
        tenant,
        names::PODS_SERVICE,
        ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![port(TUNNEL_PORT_NAME, "UDP", settings.tunnel_port)]),
            ..ServiceSpec::default()
        },
    )
}

/// The Service connectors dial.
pub fn tunnel_service(tenant: &Tenant, settings: &Settings) -> Service {
    let mut service = service(
        tenant,
        names::TUNNEL_SERVICE,
        ServiceSpec {
            type_: Some(settings.tunnel_service_type.clone()),
            external_traffic_policy: Some("Local".into()),
            ports: Some(vec![port(TUNNEL_PORT_NAME, "UDP", settings.tunnel_port)]),
            ..ServiceSpec::default()
        },
    );
    if !settings.tunnel_service_annotations.is_empty() {
        service.metadata.annotations = Some(settings.tunnel_service_annotations.clone());
    }
    service
}

/// The Service Prometheus scrapes.
pub fn metrics_service(tenant: &Tenant, settings: &Settings) -> Service {
    service(
        tenant,
        names::METRICS_SERVICE,
        ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![port(METRICS_PORT_NAME, "TCP", settings.metrics_port)]),
            ..ServiceSpec::default()
        },
    )
}

/// `network` as a CIDR range: a single address becomes a `/32` or `/128`.
fn cidr_of(network: &str) -> String {
    if network.contains('/') {
        network.to_owned()
    } else if network.contains(':') {
        format!("{network}/128")
    } else {
        format!("{network}/32")
    }
}

fn policy_port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number.into())),
        ..NetworkPolicyPort::default()
    }
}

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".into(),
            name.into(),
        )])),
        ..LabelSelector::default()
    }
}

fn outside(cidr: &str, except: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|c| (*c).to_owned()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The dataplanes' ingress and egress.
pub fn network_policy(tenant: &Tenant, settings: &Settings) -> NetworkPolicy {
    let tunnel = NetworkPolicyIngressRule {
        ports: Some(vec![policy_port("UDP", settings.tunnel_port)]),
        from: None,
    };
    let metrics = NetworkPolicyIngressRule {
        ports: Some(vec![policy_port("TCP", settings.metrics_port)]),
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(&settings.metrics_namespace)),
            ..NetworkPolicyPeer::default()
        }]),
    };
    let dns = NetworkPolicyEgressRule {
        ports: Some(vec![policy_port("UDP", 53), policy_port("TCP", 53)]),
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_named("kube-system")),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".into(), "kube-dns".into())])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
    };
    // With no range, no rule: a rule with no peers would allow every address.
    let api_server = (!settings.api_server_cidrs.is_empty()).then(|| NetworkPolicyEgressRule {
        ports: Some(vec![policy_port("TCP", 443), policy_port("TCP", 6443)]),
        to: Some(
            settings
                .api_server_cidrs
                .iter()
                .map(|cidr| outside(cidr, &[]))
                .collect(),
        ),
    });
    let internet = NetworkPolicyEgressRule {
        ports: None,
        to: Some(vec![
            outside("0.0.0.0/0", &PRIVATE_V4),
            outside("::/0", &PRIVATE_V6),
        ]),
    };
    // The trace collector usually runs in the cluster, at a private address: its port is open
    // at any address.
    // The networks the tenant lets its sessions reach (the dataplanes check each session's
    // destination; this lets the packets through).
    let allowed: Vec<NetworkPolicyPeer> = super::workload::allowed_networks(tenant)
        .map(|network| outside(&cidr_of(network), &[]))
        .collect();
    let allowed = (!allowed.is_empty()).then_some(NetworkPolicyEgressRule {
        ports: None,
        to: Some(allowed),
    });
    let collector = settings
        .otlp_endpoint
        .as_deref()
        .and_then(|url| otlp_port(url).ok())
        .map(|port| NetworkPolicyEgressRule {
            ports: Some(vec![policy_port("TCP", port)]),
            to: None,
        });
    NetworkPolicy {
        metadata: names::meta(tenant, names::DATAPLANE, true),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(names::pod_selector(tenant)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![tunnel, metrics]),
            egress: Some(
                [dns, internet]
                    .into_iter()
                    .chain(api_server)
                    .chain(allowed)
                    .chain(collector)
                    .collect(),
            ),
        }),
    }
}
