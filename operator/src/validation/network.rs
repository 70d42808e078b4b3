//! The rules of a Service (`ValidateService`) and a NetworkPolicy.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Problems;
use super::meta;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

pub fn service(service: &Service, problems: &mut Problems) {
    let Some(spec) = &service.spec else {
        problems.required("spec");
        return;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    problems.one_of(
        "spec.type",
        kind,
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if headless && kind != "ClusterIP" {
        problems.invalid(
            "spec.clusterIPs[0]",
            "None",
            "may only be set to 'None' for ClusterIP services",
        );
    }
    // A Service with external IPs is reachable from outside whatever its type.
    let external = matches!(kind, "NodePort" | "LoadBalancer")
        || spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty());
    if let Some(policy) = &spec.external_traffic_policy {
        if external {
            problems.one_of("spec.externalTrafficPolicy", policy, &["Cluster", "Local"]);
        } else {
            problems.invalid(
                "spec.externalTrafficPolicy",
                policy,
                "may only be set for externally-accessible services",
            );
        }
    }
    if let Some(affinity) = &spec.session_affinity {
        problems.one_of("spec.sessionAffinity", affinity, &["ClientIP", "None"]);
    }
    if spec.load_balancer_class.is_some() && kind != "LoadBalancer" {
        problems.forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        );
    }
    for (key, value) in spec.selector.iter().flatten() {
        problems.label("spec.selector", key, value);
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless && kind != "ExternalName" {
        problems.required("spec.ports");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match port.name.as_deref().unwrap_or_default() {
            "" if ports.len() > 1 => problems.required(&format!("{at}.name")),
            "" => {}
            name => {
                problems.dns_label(&format!("{at}.name"), name);
                if !names.insert(name) {
                    problems.duplicate(&format!("{at}.name"), name);
                }
            }
        }
        problems.port_number(&format!("{at}.port"), port.port);
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        problems.one_of(&format!("{at}.protocol"), protocol, &PROTOCOLS);
        if !numbers.insert((port.port, protocol)) {
            problems.duplicate(&at, format!("{}/{protocol}", port.port));
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => problems.port_number(&format!("{at}.targetPort"), *n),
            Some(IntOrString::String(name)) => {
                problems.port_name(&format!("{at}.targetPort"), name)
            }
            None => {}
        }
        if port.node_port.is_some_and(|n| n != 0) && kind == "ClusterIP" {
            problems.forbidden(
                &format!("{at}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            );
        }
    }
}

pub fn network_policy(policy: &NetworkPolicy, problems: &mut Problems) {
    let Some(spec) = &policy.spec else {
        return;
    };
    if let Some(selector) = &spec.pod_selector {
        meta::selector("spec.podSelector", selector, problems);
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    if types.len() > 2 {
        problems.invalid(
            "spec.policyTypes",
            types,
            "may not specify more than two policyTypes",
        );
    }
    for (i, kind) in types.iter().enumerate() {
        problems.one_of(
            &format!("spec.policyTypes[{i}]"),
            kind,
            &["Ingress", "Egress"],
        );
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let at = format!("spec.ingress[{i}]");
        rule_ports(&format!("{at}.ports"), rule.ports.as_deref(), problems);
        peers(&format!("{at}.from"), rule.from.as_deref(), problems);
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let at = format!("spec.egress[{i}]");
        rule_ports(&format!("{at}.ports"), rule.ports.as_deref(), problems);
        peers(&format!("{at}.to"), rule.to.as_deref(), problems);
    }
}

fn rule_ports(path: &str, ports: Option<&[NetworkPolicyPort]>, problems: &mut Problems) {
    for (i, port) in ports.into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(protocol) = &port.protocol {
            problems.one_of(&format!("{at}.protocol"), protocol, &PROTOCOLS);
        }
        match (&port.port, port.end_port) {
            (Some(IntOrString::Int(n)), end) => {
                problems.port_number(&format!("{at}.port"), *n);
                if let Some(end) = end
                    && end < *n
                {
                    problems.invalid(
                        &format!("{at}.endPort"),
                        end,
                        "must be greater than or equal to `port`",
                    );
                }
            }
            (Some(IntOrString::String(name)), end) => {
                problems.port_name(&format!("{at}.port"), name);
                if end.is_some() {
                    problems.forbidden(
                        &format!("{at}.endPort"),
                        "may not be specified when `port` is non-numeric",
                    );
                }
            }
            (None, Some(_)) => problems.forbidden(
                &format!("{at}.endPort"),
                "may not be specified when `port` is not specified",
            ),
            (None, None) => {}
        }
    }
}

fn peers(path: &str, peers: Option<&[NetworkPolicyPeer]>, problems: &mut Problems) {
    for (i, peer) in peers.into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, selectors) {
            (Some(_), true) => {
                problems.forbidden(&at, "may not specify both ipBlock and another peer")
            }
            (None, false) => problems.required(&at),
            (Some(block), false) => ip_block(&format!("{at}.ipBlock"), block, problems),
            (None, true) => {}
        }
        if let Some(selector) = &peer.pod_selector {
            meta::selector(&format!("{at}.podSelector"), selector, problems);
        }
        if let Some(selector) = &peer.namespace_selector {
            meta::selector(&format!("{at}.namespaceSelector"), selector, problems);
        }
    }
}

/// A CIDR's address and prefix length, when it is one.
fn cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, length) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let length: u8 = length.parse().ok()?;
    let most = if address.is_ipv4() { 32 } else { 128 };
    (length <= most).then_some((address, length))
}

/// Whether `inner` lies within `outer` (same family, no shorter prefix, same leading bits).
fn within(inner: (IpAddr, u8), outer: (IpAddr, u8)) -> bool {
    let bits = |address: IpAddr| -> u128 {
        match address {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        }
    };
    if inner.0.is_ipv4() != outer.0.is_ipv4() || inner.1 < outer.1 {
        return false;
    }
    // Both families are held in the top bits, so a prefix is the top `length` bits.
    let length = u32::from(outer.1);
    let mask = if length == 0 {
        0
    } else {
        u128::MAX << (128 - length)
    };
    bits(inner.0) & mask == bits(outer.0) & mask
}

fn ip_block(at: &str, block: &IPBlock, problems: &mut Problems) {
    let Some(outer) = cidr(&block.cidr) else {
        problems.invalid(&format!("{at}.cidr"), &block.cidr, "must be a valid CIDR");
        return;
    };
    for (i, except) in block.except.iter().flatten().enumerate() {
        let path = format!("{at}.except[{i}]");
        match cidr(except) {
            None => problems.invalid(&path, except, "must be a valid CIDR"),
            Some(inner) if !within(inner, outer) || inner.1 == outer.1 => {
                problems.invalid(&path, except, "must be a strict subset of `cidr`")
            }
            Some(_) => {}
        }
    }
}
