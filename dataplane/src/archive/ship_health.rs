//! Whether the shipper reaches the object store, for health reports: the outcome of its last
//! attempt to ship, shared between the shipper's thread and whoever reports it.
//!
//! Invariants: the health moves on a round that had something to seal or ship, and on a probe
//! of the store while nothing is due (a round with nothing due says nothing about the store);
//! a probe that succeeds never hides a shipment (`Shipped` stays); `Failing` keeps the time
//! the failures began across retries, and the latest error; the start and the end of a run
//! of failures are each reported once, to the caller that caused them.

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

    /// Whether shipping is failing now.
    pub fn failing(&self) -> bool {
        matches!(*self.lock(), ShipHealth::Failing { .. })
    }

    /// Records that a segment was shipped now; when failures end with it, since when they
    /// had lasted.
    pub(super) fn shipped(&self) -> Option<DateTime<Utc>> {
        let mut health = self.lock();
        let ended = failing_since(&health);
        *health = ShipHealth::Shipped { at: Utc::now() };
        ended
    }

    /// Records that the store answered a probe now, unless a shipment says more; when
    /// failures end with it, since when they had lasted.
    pub(super) fn reachable(&self) -> Option<DateTime<Utc>> {
        let mut health = self.lock();
        let ended = failing_since(&health);
        if !matches!(*health, ShipHealth::Shipped { .. }) {
            *health = ShipHealth::Reachable { at: Utc::now() };
        }
        ended
    }

    /// Records a failure with `error`; whether failures begin with it.
    pub(super) fn failed(&self, error: &impl std::fmt::Display) -> bool {
        let mut health = self.lock();
        let (since, began) = match &*health {
            ShipHealth::Failing { since, .. } => (*since, false),
            _ => (Utc::now(), true),
        };
        *health = ShipHealth::Failing {
            since,
            error: error.to_string(),
        };
        began
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShipHealth> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// When the failures `health` records began, if it records failures.
fn failing_since(health: &ShipHealth) -> Option<DateTime<Utc>> {
    match health {
        ShipHealth::Failing { since, .. } => Some(*since),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_start_and_a_shipment_clears_them() {
        let monitor = ShipMonitor::default();
        assert_eq!(monitor.get(), ShipHealth::NothingShipped);
        assert!(
            monitor.failed(&"the bucket is unreachable"),
            "failures begin"
        );
        let ShipHealth::Failing { since, .. } = monitor.get() else {
            panic!("failing after a failure");
        };
        assert!(!monitor.failed(&"access denied"), "and go on");
        assert_eq!(
            monitor.get(),
            ShipHealth::Failing {
                since,
                error: "access denied".into()
            }
        );
        assert_eq!(monitor.shipped(), Some(since), "a shipment ends them");
        assert!(matches!(monitor.get(), ShipHealth::Shipped { .. }));
        assert_eq!(monitor.shipped(), None);
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
