//! The alerts' Prometheus metrics: hits by rule, notices sent and failures by receiver,
//! whether each receiver takes deliveries, and what waits for it.
//!
//! Invariants: counters only grow; `imgate_alert_receiver_up` is 0 from a receiver's first
//! failed delivery until its next success, and 1 otherwise.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SentLabel {
    receiver: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    receiver: String,
    reason: &'static str,
}

/// The alerts' metrics; clones share their values.
#[derive(Clone, Default)]
pub struct AlertMetrics {
    hits: Family<RuleLabel, Counter>,
    sent: Family<SentLabel, Counter>,
    failures: Family<FailureLabel, Counter>,
    up: Family<ReceiverLabel, Gauge<i64, AtomicI64>>,
    backlog: Family<ReceiverLabel, Gauge<i64, AtomicI64>>,
}

impl AlertMetrics {
    /// Registers them in `registry`, whose prefix is `imgate`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "alert_hits",
            "Rule matches read from the archive log, by rule",
            self.hits.clone(),
        );
        registry.register(
            "alert_notices_sent",
            "Alert notices a receiver acknowledged, by receiver and status (firing, resolved)",
            self.sent.clone(),
        );
        registry.register(
            "alert_delivery_failures",
            "Deliveries to a receiver that failed and will be retried, by receiver and reason",
            self.failures.clone(),
        );
        registry.register(
            "alert_receiver_up",
            "1 while a receiver takes deliveries, 0 from its first failure until it takes one again",
            self.up.clone(),
        );
        registry.register(
            "alert_backlog",
            "Alert notices waiting for a receiver",
            self.backlog.clone(),
        );
    }

    /// A hit of `rule`.
    pub fn hit(&self, rule: &str) {
        self.hits
            .get_or_create(&RuleLabel { rule: rule.into() })
            .inc();
    }

    /// `count` notices of `status` taken by `receiver`.
    pub fn sent(&self, receiver: &str, status: &'static str, count: u64) {
        self.sent
            .get_or_create(&SentLabel {
                receiver: receiver.into(),
                status,
            })
            .inc_by(count);
    }

    /// A failed delivery.
    pub fn failed(&self, receiver: &str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabel {
                receiver: receiver.into(),
                reason,
            })
            .inc();
    }

    /// Whether `receiver` takes deliveries now.
    pub fn set_up(&self, receiver: &str, up: bool) {
        self.up
            .get_or_create(&ReceiverLabel {
                receiver: receiver.into(),
            })
            .set(i64::from(up));
    }

    /// What waits for `receiver`.
    pub fn set_backlog(&self, receiver: &str, backlog: usize) {
        self.backlog
            .get_or_create(&ReceiverLabel {
                receiver: receiver.into(),
            })
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_receivers_render_with_their_labels() {
        let metrics = AlertMetrics::default();
        let mut registry = Registry::with_prefix("imgate");
        metrics.register(&mut registry);
        metrics.failed("hook", "timeout");
        metrics.failed("hook", "timeout");
        metrics.set_up("hook", false);
        metrics.sent("siem", "firing", 3);
        let text = crate::telemetry::encode(&registry);
        for line in [
            "imgate_alert_delivery_failures_total{receiver=\"hook\",reason=\"timeout\"} 2",
            "imgate_alert_receiver_up{receiver=\"hook\"} 0",
            "imgate_alert_notices_sent_total{receiver=\"siem\",status=\"firing\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
