//! How the operator builds every tenant's dataplanes: the image, ports, sizes and limits an
//! MSP sets once (Helm values become these options).
//!
//! Invariant: [`Settings::default`] is what the Helm chart's defaults give, so that
//! `imgate operator render` previews what an installed operator makes.

use std::collections::BTreeMap;

/// Settings shared by all tenants.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The dataplane image.
    pub image: String,
    /// UDP port of the tunnel, on the pods and on the tunnel Service.
    pub tunnel_port: u16,
    /// TCP port of `/metrics` and `/healthz` on the pods.
    pub metrics_port: u16,
    /// `LoadBalancer` or `NodePort`: how connectors reach the tunnel Service.
    pub tunnel_service_type: String,
    /// Size of each dataplane's volume for its write-ahead log.
    pub wal_size: String,
    /// Storage class of that volume (the cluster's default when absent).
    pub storage_class: Option<String>,
    /// How long open sessions may run on after a dataplane is told to stop (seconds).
    pub drain_seconds: u32,
    /// Time after the drain to flush the archive log to the bucket (seconds).
    pub flush_seconds: u32,
    /// CPU and memory each dataplane requests, and the memory it may not exceed.
    pub cpu_request: String,
    /// See [`Settings::cpu_request`].
    pub memory_request: String,
    /// See [`Settings::cpu_request`].
    pub memory_limit: String,
    /// The namespace whose pods may scrape the dataplanes' metrics.
    pub metrics_namespace: String,
    /// The MSP's DNS domain for tunnels: tenant `acme` is reached as `acme.DOMAIN`, a name
    /// in the dataplanes' tunnel certificate (the in-cluster Service name always is).
    pub tunnel_domain: Option<String>,
    /// Labels a node must carry to run dataplanes (the MSP's dataplane node group).
    pub node_selector: BTreeMap<String, String>,
    /// Annotations on every tunnel Service, which give it the cloud's UDP load balancer.
    pub tunnel_service_annotations: BTreeMap<String, String>,
    /// Where the API server's endpoints are (CIDR ranges), which dataplanes call to redeem
    /// enrollment tokens and follow their policy; the dataplanes' network policy opens its
    /// ports there and nowhere else, so none at all when the list is empty (`operator run`
    /// refuses to start without one).
    pub api_server_cidrs: Vec<String>,
    /// The OTLP/HTTP endpoint (a URL, see [`otlp_port`]) that dataplanes export their
    /// OpenTelemetry traces to; none export any when absent.
    pub otlp_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/imgate/imgate:0.1.0".into(),
            tunnel_port: 4433,
            metrics_port: 9464,
            tunnel_service_type: "LoadBalancer".into(),
            wal_size: "1Gi".into(),
            storage_class: None,
            drain_seconds: 20,
            flush_seconds: 40,
            cpu_request: "250m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "512Mi".into(),
            metrics_namespace: "monitoring".into(),
            tunnel_domain: None,
            node_selector: BTreeMap::new(),
            tunnel_service_annotations: BTreeMap::new(),
            api_server_cidrs: Vec::new(),
            otlp_endpoint: None,
        }
    }
}

/// The TCP port of the OTLP/HTTP endpoint `url` (`http://otel-collector.monitoring:4318`):
/// the one it names, or its scheme's; an error saying what is expected when `url` is not an
/// `http://` or `https://` URL with a host.
pub fn otlp_port(url: &str) -> Result<u16, String> {
    let expected = "an OTLP endpoint is an http:// or https:// URL, like http://otel-collector.monitoring:4318";
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}`: {expected}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}`: {expected}"));
    }
    match (uri.scheme_str(), uri.port_u16()) {
        (Some("http" | "https"), Some(port)) => Ok(port),
        (Some("http"), None) => Ok(80),
        (Some("https"), None) => Ok(443),
        _ => Err(format!("`{url}`: {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_port;

    #[test]
    fn an_otlp_endpoint_gives_its_port_or_its_schemes() {
        assert_eq!(otlp_port("http://otel-collector.monitoring:4318"), Ok(4318));
        assert_eq!(otlp_port("http://collector"), Ok(80));
        assert_eq!(otlp_port("https://otlp.example.com/"), Ok(443));
        for bad in [
            "otel-collector:4318",
            "ftp://collector:21",
            "http://",
            "not a url",
        ] {
            let error = otlp_port(bad).expect_err(bad);
            assert!(
                error.contains("http://otel-collector.monitoring:4318"),
                "{error}"
            );
        }
    }
}
