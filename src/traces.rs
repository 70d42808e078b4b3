//! OpenTelemetry traces. When `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the spans that imgate's components open under
//! the [`TARGET`] target (a dataplane's sessions, the operator's reconciles), with the session
//! and tunnel log lines inside them as span events, are exported over OTLP/HTTP (protobuf,
//! `http://` or `https://` with the system's roots) by a batch processor. The standard
//! `OTEL_*` variables apply: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and its argument, `OTEL_BSP_*`.
//!
//! Invariants: without an endpoint nothing is built and [`TARGET`] spans stay disabled, so a
//! session pays nothing for them; message log lines (`imgate::message`, which quote people's
//! text) are never exported; exports run on a runtime of their own (the batch processor calls
//! the exporter from a thread of its own), so a slow or unreachable collector never holds a
//! session up, and what it cannot take is dropped by the SDK, which logs it;
//! [`Traces::shutdown`] exports what is queued before the process exits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The target of the spans imgate exports.
pub const TARGET: &str = imgate_dataplane::TRACE_TARGET;

/// How long one export may take (the OTLP default).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporting half of tracing, to shut down when the process ends.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports the spans still queued, waiting at most [`EXPORT_TIMEOUT`].
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!("the last traces could not be exported: {error}");
        }
    }
}

/// Whether the environment names an OTLP endpoint.
pub fn wanted() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// The layer that exports [`TARGET`] spans as `service` (unless `OTEL_SERVICE_NAME` says
/// otherwise), and the handle that flushes it.
pub fn layer<S>(service: &str) -> anyhow::Result<(impl Layer<S> + use<S>, Traces)>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(protocol) = std::env::var(name) {
            unsupported_protocol(name, &protocol)?;
        }
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(Exporting::new()?)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("the OTLP trace exporter could not be built: check OTEL_EXPORTER_OTLP_ENDPOINT (for example http://otel-collector:4318)")?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("imgate");
    let exported = Targets::new()
        .with_target(TARGET, tracing::Level::INFO)
        .with_target("imgate::session", tracing::Level::INFO)
        .with_target("imgate::tunnel", tracing::Level::INFO)
        .with_target("imgate::message", tracing::level_filters::LevelFilter::OFF)
        .with_default(tracing::Level::WARN);
    // A session's task moves between threads: the thread that opened its span means nothing.
    let layer = tracing_opentelemetry::layer()
        .with_threads(false)
        .with_tracer(tracer)
        .with_filter(exported);
    Ok((layer, Traces { provider }))
}

/// Refuses an OTLP protocol other than HTTP with protobuf, saying what to set instead.
fn unsupported_protocol(variable: &str, protocol: &str) -> anyhow::Result<()> {
    match protocol.trim() {
        "" | "http/protobuf" => Ok(()),
        other => anyhow::bail!(
            "{variable}={other}: imgate exports traces over OTLP/HTTP with protobuf; set it to http/protobuf (or unset it) and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (usually 4318)"
        ),
    }
}

/// An HTTP client for the exporter: hyper on a runtime of its own, as the batch processor
/// exports from a thread that has none.
#[derive(Debug)]
struct Exporting {
    client: Arc<
        opentelemetry_http::hyper::HyperClient<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        >,
    >,
    runtime: tokio::runtime::Runtime,
}

impl Exporting {
    fn new() -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .context("the trace exporter's runtime could not start")?;
        Ok(Self {
            client: Arc::new(opentelemetry_http::hyper::HyperClient::new(
                connector,
                EXPORT_TIMEOUT,
                None,
            )),
            runtime,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Exporting {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::unsupported_protocol;

    #[test]
    fn only_otlp_over_http_with_protobuf_is_accepted() {
        assert!(unsupported_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").is_ok());
        assert!(unsupported_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", "").is_ok());
        for other in ["grpc", "http/json"] {
            let error = unsupported_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", other)
                .expect_err(other)
                .to_string();
            assert!(
                error.contains("set it to http/protobuf") && error.contains(other),
                "{error}"
            );
        }
    }
}
