//! Where a connector finds a dataplane: a host name or address and a UDP port, and the name
//! the dataplane's certificate carries. A name is looked up again at every dial, so a
//! connector follows a load balancer whose addresses change.
//!
//! Invariants: parsing never panics and names what is wrong; the certificate name is the one
//! given, else the host when it is a name, else `localhost` (what a dataplane's own
//! certificate always carries).

use std::net::{IpAddr, SocketAddr};

/// One dataplane (or load balancer) a connector dials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A DNS name or an IP address.
    pub host: String,
    /// The UDP port.
    pub port: u16,
    /// The name checked in the dataplane's certificate.
    pub server_name: String,
}

/// Why a target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `HOST:PORT`.
    #[error("{0:?} is not HOST:PORT (an IPv6 address is written [ADDRESS]:PORT)")]
    Malformed(String),
    /// The name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Unresolved {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
}

impl Target {
    /// Parses `HOST:PORT` or `[IPV6]:PORT`; `server_name` overrides the certificate name.
    pub fn parse(text: &str, server_name: Option<&str>) -> Result<Self, TargetError> {
        let malformed = || TargetError::Malformed(text.to_owned());
        let (host, port) = match text.parse::<SocketAddr>() {
            Ok(address) => (address.ip().to_string(), address.port()),
            Err(_) => {
                let (host, port) = text.rsplit_once(':').ok_or_else(malformed)?;
                let valid = !host.is_empty()
                    && !host.contains(':')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                if !valid {
                    return Err(malformed());
                }
                (host.to_owned(), port.parse().map_err(|_| malformed())?)
            }
        };
        let server_name = match server_name {
            Some(name) => name.to_owned(),
            None if host.parse::<IpAddr>().is_err() => host.trim_end_matches('.').to_owned(),
            None => "localhost".to_owned(),
        };
        Ok(Self {
            host,
            port,
            server_name,
        })
    }

    /// The target's addresses now, in the resolver's order (never empty).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, TargetError> {
        let unresolved = |reason: String| TargetError::Unresolved {
            host: self.host.clone(),
            reason,
        };
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|error| unresolved(error.to_string()))?
            .collect();
        if addresses.is_empty() {
            return Err(unresolved("no address".into()));
        }
        Ok(addresses)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_addresses_parse_with_their_certificate_name() {
        let named = Target::parse("acme.tunnel.example.net:4433", None).expect("a name");
        assert_eq!(
            (named.host.as_str(), named.port, named.server_name.as_str()),
            ("acme.tunnel.example.net", 4433, "acme.tunnel.example.net")
        );
        let v4 = Target::parse("192.0.2.7:4433", None).expect("an address");
        assert_eq!(
            (v4.host.as_str(), v4.server_name.as_str()),
            ("192.0.2.7", "localhost")
        );
        let v6 = Target::parse("[2001:db8::1]:4433", Some("acme.example")).expect("v6");
        assert_eq!(
            (v6.host.as_str(), v6.server_name.as_str()),
            ("2001:db8::1", "acme.example")
        );
        assert_eq!(v6.to_string(), "[2001:db8::1]:4433");
        for bad in [
            "acme",
            "acme:",
            ":4433",
            "acme:99999",
            "2001:db8::1:4433",
            "a b:1",
        ] {
            let error = Target::parse(bad, None).expect_err(bad);
            assert!(error.to_string().contains("is not HOST:PORT"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_at_dial_time_and_an_unknown_one_says_so() {
        let local = Target::parse("localhost:4433", None).expect("localhost");
        let addresses = local.resolve().await.expect("localhost resolves");
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4433),
            "{addresses:?}"
        );
        let unknown = Target::parse("no-such-host.invalid:4433", None).expect("a name");
        let error = unknown
            .resolve()
            .await
            .expect_err(".invalid never resolves");
        assert!(
            error
                .to_string()
                .starts_with("cannot resolve no-such-host.invalid"),
            "{error}"
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(text in "\\PC{0,40}") {
            if let Ok(target) = Target::parse(&text, None) {
                prop_assert_eq!(Target::parse(&target.to_string(), None).ok(), Some(target));
            }
        }
    }
}
