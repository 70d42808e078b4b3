//! Prometheus metrics of a dataplane: sessions by protocol, verdicts by action, how long
//! inspected traffic is held before it is forwarded, the archive's unshipped bytes (the
//! back-pressure gauge), and the tunnel's connectors, refusals and enrollments, in the text
//! exposition format.
//!
//! Invariants: counters only grow; the unshipped-bytes gauge is read from the archive log at
//! scrape time, so it is never stale.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Instant;

use imgate_crds::policy::Direction;
use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::archive::{ArchiveLog, ShipMonitor};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Bucket bounds of the hold time, in seconds: 50 µs to 1 s.
const HOLD_BUCKETS: [f64; 13] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The dataplane's metrics.
pub struct Metrics {
    registry: Registry,
    sessions: Family<ProtocolLabel, Counter>,
    active_sessions: Gauge<i64, AtomicI64>,
    verdicts: Family<ActionLabel, Counter>,
    held: Family<DirectionLabel, Histogram>,
    unshipped: Gauge<u64, AtomicU64>,
    shipping_failing: Gauge<i64, AtomicI64>,
    log_failing: Gauge<i64, AtomicI64>,
    refused: Counter<u64, AtomicU64>,
    tunnel_connections: Gauge<i64, AtomicI64>,
    tunnel_refusals: Family<ReasonLabel, Counter>,
    tunnel_enrollments: Family<ReasonLabel, Counter>,
    tunnel_two_places: Counter,
    connections_refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imgate");
        let sessions = Family::<ProtocolLabel, Counter>::default();
        let verdicts = Family::<ActionLabel, Counter>::default();
        let unshipped = Gauge::<u64, AtomicU64>::default();
        let held = Family::<DirectionLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(HOLD_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "held_seconds",
            "Time inspected bytes spend in the dataplane, from the read that completed them to \
             their forwarding (judging, archiving and the archive wait), by direction",
            held.clone(),
        );
        registry.register(
            "sessions",
            "IM sessions identified, by protocol",
            sessions.clone(),
        );
        let active_sessions = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sessions_active",
            "IM sessions open now",
            active_sessions.clone(),
        );
        registry.register(
            "verdicts",
            "Policy verdicts on sessions, messages and file offers, by action",
            verdicts.clone(),
        );
        registry.register(
            "archive_unshipped_bytes",
            "Bytes in the archive log not yet shipped to the object store",
            unshipped.clone(),
        );
        let shipping_failing = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "archive_shipping_failing",
            "1 while shipping the archive to the object store fails (records wait in the log), \
             else 0",
            shipping_failing.clone(),
        );
        let log_failing = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "archive_log_failing",
            "1 while the local archive log cannot write (it refuses records and retries), else 0",
            log_failing.clone(),
        );
        let refused = Counter::<u64, AtomicU64>::default();
        registry.register(
            "archive_records_refused",
            "Records the archive log refused because it could not write or was full (the gap \
             record written when it records again counts them)",
            refused.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed at once because a limit was reached, by limit \
             (connections, connections_per_source)",
            connections_refused.clone(),
        );
        let tunnel_connections = Gauge::<i64, AtomicI64>::default();
        let tunnel_refusals = Family::<ReasonLabel, Counter>::default();
        let tunnel_enrollments = Family::<ReasonLabel, Counter>::default();
        let tunnel_two_places = Counter::default();
        registry.register(
            "tunnel_connector_two_places",
            "Connections of a connector made while it was connected from another address: \
             its key may be in two hands",
            tunnel_two_places.clone(),
        );
        registry.register(
            "tunnel_connections",
            "Connectors' tunnel connections open now",
            tunnel_connections.clone(),
        );
        registry.register(
            "tunnel_refusals",
            "Tunnel connections and enrollments refused, by reason",
            tunnel_refusals.clone(),
        );
        registry.register(
            "tunnel_enrollments",
            "Connector certificates signed, by reason (token or renewal)",
            tunnel_enrollments.clone(),
        );
        Self {
            registry,
            sessions,
            active_sessions,
            verdicts,
            held,
            unshipped,
            shipping_failing,
            log_failing,
            refused,
            tunnel_connections,
            tunnel_refusals,
            tunnel_enrollments,
            tunnel_two_places,
            connections_refused,
        }
    }
}

impl Metrics {
    /// Counts a session of `protocol`.
    pub fn session(&self, protocol: &str) {
        self.sessions
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .inc();
    }

    /// Counts a session open until the returned guard is dropped.
    pub fn session_open(&self) -> OpenSession<'_> {
        self.active_sessions.inc();
        OpenSession(&self.active_sessions)
    }

    /// Sessions open now.
    pub fn active_sessions(&self) -> u64 {
        u64::try_from(self.active_sessions.get()).unwrap_or(0)
    }

    /// Counts a verdict.
    pub fn verdict(&self, action: &str) {
        self.verdicts
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Observes inspected traffic read at `since` and forwarded now.
    pub fn held(&self, direction: Direction, since: Instant) {
        let direction = match direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        self.held
            .get_or_create(&DirectionLabel { direction })
            .observe(since.elapsed().as_secs_f64());
    }

    /// Counts a tunnel connection opening (`1`) or closing (`-1`).
    pub fn tunnel_connection(&self, change: i64) {
        self.tunnel_connections.inc_by(change);
    }

    /// Counts a tunnel refusal for `reason` (a short snake-case name).
    pub fn tunnel_refused(&self, reason: &'static str) {
        self.tunnel_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a connection of a connector already connected from another address.
    pub fn tunnel_two_places(&self) {
        self.tunnel_two_places.inc();
    }

    /// Counts a client connection closed at once because the limit `reason` was reached.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a connector certificate signed, for `reason` (`token` or `renewal`).
    pub fn tunnel_enrolled(&self, reason: &'static str) {
        self.tunnel_enrollments
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The registry, for metrics kept elsewhere (alerts) to register in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The exposition text, with the archive's gauges read from `log` and the shipper's
    /// `shipping` health.
    pub fn render(&self, log: &ArchiveLog, shipping: &ShipMonitor) -> String {
        self.unshipped.set(log.unshipped_bytes());
        self.shipping_failing.set(i64::from(shipping.failing()));
        self.log_failing.set(i64::from(log.failure().is_some()));
        self.refused
            .inner()
            .fetch_max(log.refused(), std::sync::atomic::Ordering::Relaxed);
        encode(&self.registry)
    }
}

/// A session counted as open; dropping it counts it closed.
pub struct OpenSession<'a>(&'a Gauge<i64, AtomicI64>);

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `registry` in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(%error, "metrics could not be encoded");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::LogConfig;
    use crate::archive::fs::StdFs;

    #[test]
    fn renders_counters_and_the_archive_gauge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = ArchiveLog::open(StdFs, dir.path(), LogConfig::default()).expect("log");
        let metrics = Metrics::default();
        metrics.session("irc");
        metrics.verdict("redact");
        metrics.verdict("redact");
        metrics.held(Direction::Outbound, Instant::now());
        metrics.tunnel_connection(1);
        metrics.tunnel_connection(1);
        metrics.tunnel_connection(-1);
        metrics.tunnel_refused("revoked");
        metrics.tunnel_enrolled("token");
        let text = metrics.render(&log, &ShipMonitor::default());
        assert!(
            text.contains("imgate_sessions_total{protocol=\"irc\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imgate_verdicts_total{action=\"redact\"} 2"),
            "{text}"
        );
        assert!(text.contains("imgate_archive_unshipped_bytes 0"), "{text}");
        assert!(text.contains("imgate_archive_shipping_failing 0"), "{text}");
        assert!(text.contains("imgate_archive_log_failing 0"), "{text}");
        assert!(
            text.contains("imgate_archive_records_refused_total 0"),
            "{text}"
        );
        assert!(text.contains("imgate_tunnel_connections 1"), "{text}");
        assert!(
            text.contains("imgate_tunnel_refusals_total{reason=\"revoked\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imgate_tunnel_enrollments_total{reason=\"token\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("imgate_held_seconds_count{direction=\"outbound\"} 1")
                && text.contains("imgate_held_seconds_bucket{le=\"1.0\",direction=\"outbound\"} 1"),
            "{text}"
        );
        log.close();
    }
}
