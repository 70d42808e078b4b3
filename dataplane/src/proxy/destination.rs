//! Where a client's session may go. A SOCKS5, HTTP CONNECT or tunnel client names any
//! `host:port`; dialled as named, that makes the dataplane an open proxy into the network it
//! runs in (the Kubernetes API, the cloud's instance metadata at 169.254.169.254, the pod's
//! own loopback and sidecars) and a port scanner. So a destination is policy, checked before
//! anything is dialled.
//!
//! Invariants:
//! - A name is resolved once; every address it resolves to is checked, and only addresses
//!   that passed are dialled (a name that resolves again differently cannot slip through).
//! - Loopback, unspecified, link-local, private (RFC 1918), shared (CGNAT), unique-local,
//!   multicast, reserved, IPv4-mapped and NAT64 addresses are refused unless a network the
//!   operator allows ([`Destinations::new`]) holds them.
//! - Once any domain is allowed, sessions reach only names in the allowed domains (each with
//!   every name under it) and addresses in the allowed networks: any other name is refused
//!   before it is resolved (so a client cannot even have the dataplane look it up), any other
//!   address as named. An allowed name's addresses are still checked as above.
//! - A tenant's own rules ([`Destinations::deny`], [`Destinations::ports`]) come before
//!   everything else: a denied domain (and every name under it), a denied network and a port
//!   outside the allowed ones are refused even where the address is public or allowed. A
//!   domain is checked on the name the client gave, before it is resolved.
//! - A refused destination, one that cannot be reached and one that does not answer in time
//!   get the same answer (the front end's "unreachable"); the log says which it was, and the
//!   archive records every refusal. (How soon the answer comes still differs: a refusal is
//!   immediate, a silent host takes the connect timeout.)
//! - Fixed port-forwards, which the operator configures, are not checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?}: not an IP address or CIDR range like 10.0.0.0/8"))?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(|| format!("{text:?}: a prefix length is 0 to {most}"))?,
        };
        let network = Self { address, prefix };
        // `10.20.0.0/1` is more likely a typo for `/16` than a wish to open half of all
        // addresses: a range must be written with its first address.
        if network.has_host_bits() {
            return Err(format!(
                "{text:?}: the address has bits set beyond its /{prefix} prefix; write the range's first address"
            ));
        }
        Ok(network)
    }

    /// Whether the address has bits set beyond the prefix.
    fn has_host_bits(&self) -> bool {
        let host = match self.prefix {
            0 => u128::MAX,
            prefix => !(u128::MAX << (128 - u32::from(prefix))),
        };
        bits(self.address) & host != 0
    }

    /// Every address of one family: IPv6 when `v6`, else IPv4.
    pub const fn everywhere(v6: bool) -> Self {
        if v6 {
            Self::v6([0; 8], 0)
        } else {
            Self::v4(0, 0, 0, 0, 0)
        }
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            address: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` lies in this network (an IPv4 address never lies in an IPv6 network).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.address.is_ipv4() {
            return false;
        }
        let mask = match self.prefix {
            0 => 0,
            prefix => u128::MAX << (128 - u32::from(prefix)),
        };
        bits(ip) & mask == bits(self.address) & mask
    }
}

/// An address's bits, an IPv4 address in the top 32, so that a prefix is the top bits either
/// way.
fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The networks refused unless allowed, and why.
const REFUSED: [(Network, &str); 23] = [
    (Network::v4(0, 0, 0, 0, 8), "unspecified (this network)"),
    (Network::v4(127, 0, 0, 0, 8), "loopback"),
    (Network::v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (Network::v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (Network::v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (
        Network::v4(100, 64, 0, 0, 10),
        "shared address space (CGNAT)",
    ),
    (
        Network::v4(169, 254, 0, 0, 16),
        "link-local (where clouds serve instance metadata)",
    ),
    (
        Network::v4(192, 0, 0, 0, 24),
        "reserved for protocol assignments",
    ),
    (Network::v4(198, 18, 0, 0, 15), "reserved for benchmarking"),
    (Network::v4(224, 0, 0, 0, 4), "multicast"),
    (Network::v4(240, 0, 0, 0, 4), "reserved (and broadcast)"),
    (Network::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        Network::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "unspecified or IPv4-compatible (deprecated)",
    ),
    (
        Network::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only",
    ),
    (
        Network::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (
        Network::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        "6to4 (an IPv4 address inside)",
    ),
    (
        Network::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "Teredo (an IPv4 address inside)",
    ),
    (
        Network::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local",
    ),
    (Network::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Network::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
    (
        Network::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        "IPv4-mapped (an IPv4 address in IPv6 clothes)",
    ),
    (Network::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "NAT64"),
    (
        Network::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local NAT64",
    ),
];

/// The destinations a tenant allows or denies: a network, or a domain and every name under
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Addresses in this network.
    Network(Network),
    /// This name and every name under it (lower case, no trailing dot).
    Domain(String),
}

impl Rule {
    /// Parses `10.0.0.0/8`, an address, or a domain such as `chat.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.parse::<IpAddr>().is_ok() || text.contains('/') {
            return Network::parse(text).map(Self::Network);
        }
        let domain = text.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(format!(
                "{text:?}: not a network (10.0.0.0/8), an address or a domain (chat.example.com)"
            ));
        }
        // `10.20`, `127.1` or `2130706433` are addresses to a resolver (and `10.20.0.0-16` a
        // mistyped range): a name whose last label is a number is not taken as a domain.
        let last = domain.rsplit('.').next().unwrap_or_default();
        let numeric = |b: u8| b.is_ascii_digit() || b == b'.' || b == b'-';
        if last.bytes().all(|b| b.is_ascii_digit())
            || last.starts_with("0x")
            || domain.bytes().all(numeric)
        {
            return Err(format!(
                "{text:?}: looks like an address but is not one; write an address, a range like 10.0.0.0/8, or a domain"
            ));
        }
        Ok(Self::Domain(domain))
    }
}

/// Whether `host` (lower case, no trailing dot) is `domain` or a name under it.
fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Ports sessions may go to: one port or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    first: u16,
    last: u16,
}

impl Ports {
    /// Parses `5222` or `5222-5223`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let port = |part: &str| {
            part.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text:?}: a port is 1 to 65535, a range is 5222-5223"))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (port(first)?, port(last)?),
            None => (port(text)?, port(text)?),
        };
        if first > last {
            return Err(format!("{text:?}: a range goes from its lower port up"));
        }
        Ok(Self { first, last })
    }

    fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// Which destinations sessions may be dialled to.
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    allowed: Vec<Network>,
    allowed_domains: Vec<String>,
    denied: Vec<Rule>,
    ports: Vec<Ports>,
}

impl Destinations {
    /// Destinations outside the refused ranges, and inside them those in an allowed network;
    /// once `allowed` names a domain, only names in the allowed domains and addresses in the
    /// allowed networks.
    pub fn new(allowed: Vec<Rule>) -> Self {
        let mut destinations = Self::default();
        for rule in allowed {
            match rule {
                Rule::Network(network) => destinations.allowed.push(network),
                Rule::Domain(domain) => destinations.allowed_domains.push(domain),
            }
        }
        destinations
    }

    /// The same, with `denied` refused before anything else is considered.
    pub fn deny(mut self, denied: Vec<Rule>) -> Self {
        self.denied = denied;
        self
    }

    /// The same, with only `ports` allowed (any port when empty).
    pub fn ports(mut self, ports: Vec<Ports>) -> Self {
        self.ports = ports;
        self
    }

    /// Why the client's `host` and `port` are refused before any name is resolved, or `None`.
    pub fn host_refusal(&self, host: &str, port: u16) -> Option<String> {
        if !self.ports.is_empty() && !self.ports.iter().any(|p| p.contains(port)) {
            return Some(format!(
                "port {port} is not among the tenant's allowed ports"
            ));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let denied = self.denied.iter().find_map(|deny| match deny {
            Rule::Domain(domain) if within(&host, domain) => {
                Some(format!("{host} is in {domain}, which the tenant denies"))
            }
            _ => None,
        });
        if denied.is_some() || self.allowed_domains.is_empty() {
            return denied;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) if self.allowed.iter().any(|network| network.contains(ip)) => None,
            Ok(ip) => Some(format!(
                "{ip} is named by address, and outside the networks the tenant allows (it allows only named domains)"
            )),
            Err(_)
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
            {
                Some(format!("{host:?} is not a domain name"))
            }
            Err(_) if self.allowed_domains.iter().any(|d| within(&host, d)) => None,
            Err(_) => Some(format!(
                "{host} is in none of the domains the tenant allows"
            )),
        }
    }

    /// Why `ip` is refused, or `None` when it may be dialled.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let denied = |deny: &Rule| matches!(deny, Rule::Network(network) if network.contains(ip));
        if self.denied.iter().any(denied) {
            return Some("in a network the tenant denies");
        }
        if self.allowed.iter().any(|network| network.contains(ip)) {
            return None;
        }
        REFUSED
            .iter()
            .find(|(network, _)| network.contains(ip))
            .map(|(_, why)| *why)
    }
}

/// Why a destination was not connected.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Policy refused every address the name has.
    #[error("refused: {0}")]
    Refused(String),
    /// No address answered.
    #[error("cannot reach it: {0}")]
    Unreachable(String),
    /// The name did not resolve, or no address answered, in time.
    #[error("timed out")]
    TimedOut,
}

/// Resolves `host` once, checks every address against `destinations`, and connects to the
/// first allowed address that answers, all within `timeout`.
pub async fn dial(
    host: &str,
    port: u16,
    destinations: &Destinations,
    timeout: Duration,
) -> Result<TcpStream, DialError> {
    if let Some(why) = destinations.host_refusal(host, port) {
        return Err(DialError::Refused(why));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| DialError::TimedOut)?
            .map_err(|error| DialError::Unreachable(format!("cannot resolve {host}: {error}")))?
            .collect(),
    };
    let mut refused = None;
    let mut allowed = Vec::new();
    for address in addresses {
        match destinations.refusal(address.ip()) {
            Some(why) => {
                refused.get_or_insert_with(|| format!("{} is {why}", address.ip()));
            }
            None => allowed.push(address),
        }
    }
    if allowed.is_empty() {
        return Err(match refused {
            Some(why) => DialError::Refused(why),
            None => DialError::Unreachable(format!("{host} resolves to no address")),
        });
    }
    let mut last = None;
    for address in allowed {
        match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last = Some(format!("{address}: {error}")),
            Err(_) => return Err(DialError::TimedOut),
        }
    }
    Err(DialError::Unreachable(last.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn the_cluster_and_the_host_are_refused_and_the_internet_is_not() {
        let destinations = Destinations::default();
        for (address, why) in [
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.96.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.10", "CGNAT"),
            ("169.254.169.254", "instance metadata"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::ffff:8.8.8.8", "IPv4-mapped"),
            ("::a00:1", "IPv4-compatible"),
            ("198.19.0.1", "benchmarking"),
            ("fec0::1", "site-local"),
            ("2002:a00:1::1", "6to4"),
            ("2001:0:a00:1::1", "Teredo"),
            ("64:ff9b::a00:1", "NAT64"),
        ] {
            let refused = destinations.refusal(ip(address));
            assert!(
                refused.is_some_and(|r| r.contains(why)),
                "{address}: {refused:?}"
            );
        }
        for address in [
            "8.8.8.8",
            "203.0.113.7",
            "172.32.0.1",
            "2001:db8::1",
            "2a00:1450::1",
        ] {
            assert_eq!(destinations.refusal(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn an_allowed_network_opens_exactly_its_addresses() {
        let destinations = Destinations::new(vec![
            Rule::Network(Network::parse("10.20.0.0/16").expect("a network")),
            Rule::Network(Network::parse("::1").expect("an address")),
        ]);
        assert_eq!(destinations.refusal(ip("10.20.3.4")), None);
        assert!(destinations.refusal(ip("10.21.0.1")).is_some());
        assert_eq!(destinations.refusal(ip("::1")), None);
        assert!(destinations.refusal(ip("127.0.0.1")).is_some());
        for bad in [
            "10.0.0.0/33",
            "localhost",
            "::/129",
            "10.0.0.0/x",
            "10.20.0.0/1",
            "fd00::1/8",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tenants_denied_domains_networks_and_ports_come_before_everything() {
        let destinations = Destinations::new(vec![Rule::Network(
            Network::parse("10.20.0.0/16").expect("net"),
        )])
        .deny(
            [
                "10.20.9.0/24",
                "8.8.8.0/24",
                "Games.Example.",
                "2001:db8::/32",
            ]
            .into_iter()
            .map(|d| Rule::parse(d).expect("a rule"))
            .collect(),
        )
        .ports(vec![
            Ports::parse("5222-5223").expect("ports"),
            Ports::parse("6697").expect("port"),
        ]);
        assert_eq!(destinations.refusal(ip("10.20.3.4")), None, "allowed");
        for denied in ["10.20.9.1", "8.8.8.8", "2001:db8::1"] {
            assert_eq!(
                destinations.refusal(ip(denied)),
                Some("in a network the tenant denies"),
                "{denied}: deny wins over allow and over public"
            );
        }
        assert_eq!(destinations.refusal(ip("8.8.4.4")), None);
        for (host, port) in [("games.example", 5222), ("chat.games.example.", 6697)] {
            let refused = destinations.host_refusal(host, port);
            assert!(
                refused
                    .as_deref()
                    .is_some_and(|r| r.contains("games.example")),
                "{host}: {refused:?}"
            );
        }
        for (host, port) in [("notgames.example", 5222), ("games.example.org", 5223)] {
            assert_eq!(destinations.host_refusal(host, port), None, "{host}");
        }
        let refused = destinations.host_refusal("chat.example", 443);
        assert!(
            refused.as_deref().is_some_and(|r| r.contains("port 443")),
            "{refused:?}"
        );
        for bad in [
            "",
            "-bad.example",
            "a..b",
            "under_score.example",
            "10.20",
            "127.1",
            "2130706433",
            "10.20.0.0-16",
            "0x7f.1",
            "10.0.0.0/40",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["0", "65536", "5223-5222", "x", "1-"] {
            assert!(Ports::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn once_a_domain_is_allowed_only_allowed_domains_and_networks_are_reached() {
        let destinations = Destinations::new(
            ["chat.example", "10.20.0.0/16"]
                .into_iter()
                .map(|r| Rule::parse(r).expect("a rule"))
                .collect(),
        )
        .deny(vec![Rule::parse("old.chat.example").expect("a domain")]);
        for host in ["chat.example", "Xmpp.Chat.Example.", "10.20.3.4"] {
            assert_eq!(destinations.host_refusal(host, 5222), None, "{host}");
        }
        for (host, why) in [
            ("chatexample", "none of the domains"),
            ("evil.example", "none of the domains"),
            ("chat.example.evil", "none of the domains"),
            ("8.8.8.8", "named by address"),
            ("2001:db8::1", "named by address"),
            ("old.chat.example", "which the tenant denies"),
            ("8.8.8.8 .chat.example", "not a domain name"),
            ("evil.example\u{0}.chat.example", "not a domain name"),
        ] {
            let refused = destinations.host_refusal(host, 5222);
            assert!(
                refused.as_deref().is_some_and(|r| r.contains(why)),
                "{host}: {refused:?}"
            );
        }
        // An allowed name's addresses are still checked.
        assert!(destinations.refusal(ip("127.0.0.1")).is_some());
        assert_eq!(destinations.refusal(ip("8.8.8.8")), None);
        let networks_only =
            Destinations::new(vec![Rule::parse("10.20.0.0/16").expect("a network")]);
        assert_eq!(
            networks_only.host_refusal("evil.example", 5222),
            None,
            "networks alone open ranges, they restrict nothing"
        );
    }

    #[tokio::test]
    async fn a_denied_name_is_refused_before_it_is_resolved() {
        let destinations =
            Destinations::default().deny(vec![Rule::parse("invalid").expect("a domain")]);
        // `.invalid` never resolves (RFC 2606): a refusal, not a failed lookup, shows that
        // the name was refused before any lookup.
        let refused = dial("im.invalid", 5222, &destinations, Duration::from_secs(5)).await;
        assert!(
            matches!(&refused, Err(DialError::Refused(why)) if why.contains("which the tenant denies")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_destination_is_never_dialled_and_a_name_is_checked_by_its_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let closed = Destinations::default();
        for host in ["127.0.0.1", "localhost"] {
            let refused = dial(host, port, &closed, Duration::from_secs(5)).await;
            assert!(
                matches!(&refused, Err(DialError::Refused(why)) if why.contains("loopback")),
                "{host}: {refused:?}"
            );
        }
        let open = Destinations::new(vec![
            Rule::Network(Network::parse("127.0.0.0/8").expect("a network")),
            Rule::Network(Network::parse("::1").expect("an address")),
        ]);
        let dialled = dial("localhost", port, &open, Duration::from_secs(5)).await;
        assert!(dialled.is_ok(), "{dialled:?}");
        let (_accepted, _) = listener.accept().await.expect("the dial arrived");
    }
}
