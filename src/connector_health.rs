//! The connector's Prometheus metrics and health endpoint: `/metrics`, and `/healthz`, which
//! answers 200 while at least one connection to a dataplane is usable and 503 otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::StatusCode;
use imgate_dataplane::tunnel::connector::Connector;
use tokio::net::TcpListener;

/// Serves the endpoint on `spec`; returns the address it listens on.
pub async fn serve(spec: &str, connector: Arc<Connector>) -> anyhow::Result<SocketAddr> {
    let address: SocketAddr = spec
        .parse()
        .with_context(|| format!("{spec:?} is not an address like 127.0.0.1:9465"))?;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot serve metrics on {address} (in use? choose another with --metrics)")
    })?;
    let bound = listener.local_addr()?;
    let metrics = {
        let connector = connector.clone();
        move || {
            let connector = connector.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    connector
                        .metrics
                        .render(connector.connected().len(), connector.datagram()),
                )
            }
        }
    };
    let health = move || {
        let connector = connector.clone();
        async move {
            let connected = connector.connected();
            if connected.is_empty() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no dataplane connected\n".to_owned(),
                )
            } else {
                let list: Vec<String> = connected.iter().map(ToString::to_string).collect();
                (
                    StatusCode::OK,
                    format!("ok: connected to {}\n", list.join(", ")),
                )
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(health));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}
