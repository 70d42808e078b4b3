//! The HTTP client alerts are posted with (Alertmanager, webhooks): hyper over rustls, and a
//! resolver that refuses addresses outside the public internet unless the receiver allows
//! them.
//!
//! Invariants: a receiver that does not set `allowPrivateNetwork` is never connected to at a
//! loopback, private, link-local or other non-public address, whether its URL names the
//! address or a name that resolves to one (the check is made on the addresses actually
//! dialled, so a name that changes its answer between a check and the connection gains
//! nothing); every request has a deadline.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;

use super::config::refusal;
use super::deliver::DeliveryError;

/// How long a request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response body read (for the error message).
const MOST_BODY: usize = 4096;

/// Resolves names, keeping only the addresses the receiver may be reached at.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            checked(&host, found, allow_private).map(Vec::into_iter)
        })
    }
}

/// The addresses `host` resolved to that may be dialled; an error naming why when none may.
pub fn checked(
    host: &str,
    found: Vec<SocketAddr>,
    allow_private: bool,
) -> std::io::Result<Vec<SocketAddr>> {
    if allow_private {
        return Ok(found);
    }
    let mut why = None;
    let kept: Vec<SocketAddr> = found
        .into_iter()
        .filter(|address| match refusal(address.ip()) {
            None => true,
            Some(reason) => {
                why.get_or_insert((address.ip(), reason));
                false
            }
        })
        .collect();
    match (kept.is_empty(), why) {
        (true, Some((ip, reason))) => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            refused_message(host, ip, reason),
        )),
        _ => Ok(kept),
    }
}

/// What a refused receiver address is told.
pub fn refused_message(host: &str, ip: IpAddr, reason: &str) -> String {
    format!(
        "{host} is at {ip}, which is {reason}: alerts go to public addresses unless the receiver sets allowPrivateNetwork: true"
    )
}

/// An HTTP(S) client for one receiver.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    allow_private: bool,
}

impl HttpClient {
    /// A client trusting the system's roots.
    pub fn new(allow_private: bool) -> Self {
        let tls = super::deliver::tls_config(None)
            .map(|config| (*config).clone())
            .unwrap_or_else(|e| unreachable!("the system's roots need no parsing: {e}"));
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Self {
            client,
            allow_private,
        }
    }

    /// Posts `body` to `url` with `headers`; a 2xx answer is success.
    pub async fn post(
        &self,
        url: &http::Uri,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        if !self.allow_private
            && let Some(host) = url.host()
            && let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
            && let Some(reason) = refusal(ip)
        {
            return Err(DeliveryError::Refused(refused_message(host, ip, reason)));
        }
        let mut request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "imgate-alerts");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Connect(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| DeliveryError::from_client(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MOST_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).chars().take(200).collect();
            match status.as_u16() {
                200..=299 => Ok(()),
                // Refusals of what was sent; any other answer (401, 403, 404, 5xx…) says
                // the receiver or its settings are wrong, which is retried and reported.
                400 | 413 | 415 | 422 => Err(DeliveryError::Rejected(status.as_u16(), text)),
                _ => Err(DeliveryError::Status(status.as_u16(), text)),
            }
        };
        super::deliver::within(exchange).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolving_only_to_private_addresses_are_refused_with_the_reason() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let public: SocketAddr = "93.184.215.14:0".parse().expect("address");
        let error = checked("hooks.example", vec![loopback], false).expect_err("refused");
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("loopback"), "{error}");
        assert_eq!(
            checked("hooks.example", vec![loopback, public], false).expect("kept"),
            vec![public],
            "only the public address is dialled"
        );
        assert_eq!(
            checked("hooks.example", vec![loopback], true).expect("allowed"),
            vec![loopback]
        );
    }
}
