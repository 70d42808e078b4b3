//! Whether the shipper reaches the object store, for health reports: the outcome of its last
//! attempt to ship, shared between the shipper's thread and whoever reports it.
//!
//! Invariants: the health moves on a round that had something to seal or ship, and on a probe
//! of the store while nothing is due (a round with nothing due says nothing about the store);
//! a probe that succeeds never hides a shipment (`Shipped` stays); `Failing` keeps the time
//! the failures began across retries, and the latest error.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The shipper's health as last observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum ShipHealth {
    /// Nothing was due to ship since the dataplane started.
    #[default]
    NothingShipped,
    /// The last segment due was shipped, at `at`.
    Shipped {
        /// When.
        at: DateTime<Utc>,
    },
    /// Nothing was due to ship, and the store answered a probe at `at`.
    Reachable {
        /// When.
        at: DateTime<Utc>,
    },
    /// Sealing or shipping has failed since `since`, the last time with `error`.
    Failing {
        /// When the failures began.
        since: DateTime<Utc>,
        /// The latest error.
        error: String,
    },
}

/// The shared cell the shipper writes its health into.
#[derive(Debug, Default)]
pub struct ShipMonitor(Mutex<ShipHealth>);

impl ShipMonitor {
    /// The health as last observed.
    pub fn get(&self) -> ShipHealth {
        self.lock().clone()
    }

    /// Records that a segment was shipped now.
    pub(super) fn shipped(&self) {
        *self.lock() = ShipHealth::Shipped { at: Utc::now() };
    }

    /// Records that the store answered a probe now, unless a shipment says more.
    pub(super) fn reachable(&self) {
        let mut health = self.lock();
        if !matches!(*health, ShipHealth::Shipped { .. }) {
            *health = ShipHealth::Reachable { at: Utc::now() };
        }
    }

    /// Records a failure with `error`.
    pub(super) fn failed(&self, error: &impl std::fmt::Display) {
        let mut health = self.lock();
        let since = match &*health {
            ShipHealth::Failing { since, .. } => *since,
            _ => Utc::now(),
        };
        *health = ShipHealth::Failing {
            since,
            error: error.to_string(),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShipHealth> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_start_and_a_shipment_clears_them() {
        let monitor = ShipMonitor::default();
        assert_eq!(monitor.get(), ShipHealth::NothingShipped);
        monitor.failed(&"the bucket is unreachable");
        let ShipHealth::Failing { since, .. } = monitor.get() else {
            panic!("failing after a failure");
        };
        monitor.failed(&"access denied");
        assert_eq!(
            monitor.get(),
            ShipHealth::Failing {
                since,
                error: "access denied".into()
            }
        );
        monitor.shipped();
        assert!(matches!(monitor.get(), ShipHealth::Shipped { .. }));
        let text = serde_json::to_string(&ShipHealth::Failing {
            since,
            error: "x".into(),
        })
        .expect("JSON");
        assert!(text.starts_with(r#"{"state":"Failing","since":"#), "{text}");
    }

    #[test]
    fn a_probe_clears_a_failure_but_never_hides_a_shipment() {
        let monitor = ShipMonitor::default();
        monitor.reachable();
        assert!(matches!(monitor.get(), ShipHealth::Reachable { .. }));
        monitor.failed(&"the bucket is unreachable");
        monitor.reachable();
        assert!(matches!(monitor.get(), ShipHealth::Reachable { .. }));
        monitor.shipped();
        let shipped = monitor.get();
        monitor.reachable();
        assert_eq!(monitor.get(), shipped);
    }
}
