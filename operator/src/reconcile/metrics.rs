//! The operator's Prometheus metrics: reconciles, their failures by the step that failed,
//! their duration, whether this replica leads, and the writes of dataplane reports into
//! Tenant status by outcome.
//!
//! Invariants: counters only grow; every reconcile is counted once, when it ends, and a
//! failed one once more under its error's [`metric_label`](super::Error::metric_label); every
//! report write is counted once, when the API server has answered.

use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<ErrorLabel, Counter>,
    duration: Histogram,
    leader: Gauge<i64, AtomicI64>,
    report_writes: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imgate_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let leader = Gauge::<i64, AtomicI64>::default();
        let report_writes = Family::<OutcomeLabel, Counter>::default();
        registry.register("reconciles", "Tenant reconciles ended", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Tenant reconciles that failed, by the step that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long Tenant reconciles took",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "report_writes",
            "Writes of dataplane reports into Tenant status, by outcome (written or failed)",
            report_writes.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            report_writes,
        }
    }
}

impl Metrics {
    /// Marks the start of a reconcile.
    pub fn started(&self) -> Instant {
        Instant::now()
    }

    /// Counts a reconcile begun at `started`, and its `error` if it failed.
    pub fn finished(&self, started: Instant, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(started.elapsed().as_secs_f64());
        if let Some(error) = error {
            self.failures
                .get_or_create(&ErrorLabel {
                    error: error.metric_label(),
                })
                .inc();
        }
    }

    /// Counts a write of dataplane reports into a Tenant's status, `written` or not.
    pub fn report_written(&self, written: bool) {
        let outcome = if written { "written" } else { "failed" };
        self.report_writes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
