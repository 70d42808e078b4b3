//! Prometheus metrics of a connector: its usable connections to dataplanes, the datagram size
//! they use, and the streams it carried by outcome.
//!
//! Invariants: counters only grow; the gauges are set at scrape time from the connector's
//! slots, so they are never stale.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A connector's metrics.
pub struct ConnectorMetrics {
    registry: Registry,
    connections: Gauge<i64, AtomicI64>,
    datagram: Gauge<i64, AtomicI64>,
    streams: Family<OutcomeLabel, Counter>,
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imgate_connector");
        let connections = Gauge::<i64, AtomicI64>::default();
        let datagram = Gauge::<i64, AtomicI64>::default();
        let streams = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "connections",
            "Usable tunnel connections to dataplanes",
            connections.clone(),
        );
        registry.register_with_unit(
            "datagram",
            "Largest datagram the usable connections send, smallest across them (what their \
             paths were found to carry; 0 while none is usable)",
            Unit::Bytes,
            datagram.clone(),
        );
        registry.register(
            "streams",
            "Client connections carried through the tunnel, by outcome (connected, refused, \
             unreachable; retried counts streams moved to another connection)",
            streams.clone(),
        );
        Self {
            registry,
            connections,
            datagram,
            streams,
        }
    }
}

impl ConnectorMetrics {
    /// Counts a stream's `outcome`.
    pub fn stream(&self, outcome: &'static str) {
        self.streams.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The exposition text, with `connections` usable connections now, whose smallest
    /// datagram size is `datagram`.
    pub fn render(&self, connections: usize, datagram: Option<u16>) -> String {
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        self.datagram.set(datagram.map_or(0, i64::from));
        crate::telemetry::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_connections_and_streams() {
        let metrics = ConnectorMetrics::default();
        metrics.stream("connected");
        metrics.stream("connected");
        metrics.stream("retried");
        let text = metrics.render(2, Some(8952));
        assert!(text.contains("imgate_connector_connections 2"), "{text}");
        assert!(
            text.contains("imgate_connector_datagram_bytes 8952"),
            "{text}"
        );
        let none = metrics.render(0, None);
        assert!(none.contains("imgate_connector_datagram_bytes 0"), "{none}");
        assert!(
            text.contains("imgate_connector_streams_total{outcome=\"connected\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("imgate_connector_streams_total{outcome=\"retried\"} 1"),
            "{text}"
        );
    }
}
