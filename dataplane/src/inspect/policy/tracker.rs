//! Per-sender state behind rate limits, IM-worm containment and quarantine.
//!
//! The compiled policy is immutable and shared; this tracker is the only mutable state the
//! engine keeps, and time enters only as the event timestamp, so behaviour is deterministic.
//!
//! Invariants (bounded memory under hostile traffic):
//! - at most `max_senders` senders are tracked; when full, senders with no live state are
//!   dropped first, then the least recently seen;
//! - per sender and mode, at most [`MAX_FINGERPRINTS`] fan-out fingerprints, each holding at
//!   most the policy's `distinctRecipients` recipients, all younger than the window.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use imgate_crds::policy::PolicyMode;

/// Fan-out fingerprints kept per sender; the oldest is evicted first.
pub const MAX_FINGERPRINTS: usize = 64;
/// Senders tracked by default.
pub const DEFAULT_MAX_SENDERS: usize = 100_000;

/// A rate limit: `messages` per `per_ms`, as a generic cell rate algorithm (a token bucket
/// that allows bursts of `messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Messages per window.
    pub messages: u32,
    /// The window in milliseconds.
    pub per_ms: u64,
}

/// A fan-out rule: `distinct` recipients within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutSpec {
    /// Distinct recipients that trip the rule.
    pub distinct: u32,
    /// The window in milliseconds.
    pub window_ms: u64,
}

#[derive(Debug, Default)]
struct ModeState {
    /// GCRA theoretical arrival time, in microseconds.
    rate_tat_us: Option<u64>,
    fanout: Vec<Fanout>,
}

#[derive(Debug)]
struct Fanout {
    fingerprint: u64,
    /// (recipient hash, last seen ms)
    recipients: Vec<(u64, u64)>,
    last_ms: u64,
}

#[derive(Debug, Default)]
struct SenderState {
    modes: [ModeState; 2],
    quarantine: Option<(u64, Arc<str>)>,
    last_seen_ms: u64,
}

impl SenderState {
    fn is_idle(&self, now_ms: u64) -> bool {
        self.quarantine
            .as_ref()
            .is_none_or(|(until, _)| *until <= now_ms)
            && self
                .modes
                .iter()
                .all(|m| m.fanout.is_empty() && m.rate_tat_us.is_none_or(|t| t <= now_ms * 1000))
    }
}

/// Mutable per-sender state for one tenant.
#[derive(Debug)]
pub struct SenderTracker {
    senders: HashMap<Box<str>, SenderState>,
    max_senders: usize,
    hasher: std::hash::RandomState,
}

impl Default for SenderTracker {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_MAX_SENDERS)
    }
}

fn slot(mode: PolicyMode) -> usize {
    match mode {
        PolicyMode::Enforce => 0,
        PolicyMode::Monitor => 1,
    }
}

impl SenderTracker {
    /// A tracker that follows at most `max_senders` senders.
    pub fn with_capacity(max_senders: usize) -> Self {
        Self {
            senders: HashMap::new(),
            max_senders: max_senders.max(1),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Senders currently tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// True when no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    fn sender(&mut self, handle: &str, now_ms: u64) -> &mut SenderState {
        if !self.senders.contains_key(handle) && self.senders.len() >= self.max_senders {
            self.evict(now_ms);
        }
        let state = self.senders.entry(handle.into()).or_default();
        state.last_seen_ms = state.last_seen_ms.max(now_ms);
        state
    }

    /// Makes room: drops idle senders, then if still full the least recently seen eighth, so
    /// that eviction work is amortised over many new senders.
    fn evict(&mut self, now_ms: u64) {
        self.senders.retain(|_, s| !s.is_idle(now_ms));
        if self.senders.len() >= self.max_senders {
            let mut seen: Vec<u64> = self.senders.values().map(|s| s.last_seen_ms).collect();
            let cut = seen.len() / 8;
            let (_, cutoff, _) = seen.select_nth_unstable(cut);
            let cutoff = *cutoff;
            self.senders.retain(|_, s| s.last_seen_ms > cutoff);
        }
    }

    /// The rule that quarantined `handle`, while the quarantine lasts.
    pub fn quarantined(&self, handle: &str, now_ms: u64) -> Option<(Arc<str>, u64)> {
        let (until, rule) = self.senders.get(handle)?.quarantine.as_ref()?;
        (*until > now_ms).then(|| (rule.clone(), *until))
    }

    /// Quarantines `handle` until `until_ms` because of `rule`.
    pub fn quarantine(&mut self, handle: &str, until_ms: u64, rule: Arc<str>, now_ms: u64) {
        let state = self.sender(handle, now_ms);
        if state
            .quarantine
            .as_ref()
            .is_none_or(|(current, _)| *current < until_ms)
        {
            state.quarantine = Some((until_ms, rule));
        }
    }

    /// Counts one message against the sender's rate limit; true when it is over the limit
    /// (a message over the limit does not consume the allowance).
    pub fn over_rate(
        &mut self,
        handle: &str,
        mode: PolicyMode,
        spec: RateSpec,
        now_ms: u64,
    ) -> bool {
        let now_us = now_ms.saturating_mul(1000);
        let interval_us = spec.per_ms.saturating_mul(1000) / u64::from(spec.messages.max(1));
        let tolerance_us = spec.per_ms.saturating_mul(1000).saturating_sub(interval_us);
        let state = &mut self.sender(handle, now_ms).modes[slot(mode)];
        let tat = state.rate_tat_us.unwrap_or(now_us).max(now_us);
        if tat - now_us > tolerance_us {
            return true;
        }
        state.rate_tat_us = Some(tat + interval_us);
        false
    }

    /// Records that `handle` sent the item `fingerprint` to `recipients`; returns how many
    /// distinct recipients received it within the window (capped at `spec.distinct`).
    pub fn fan_out<R: Hash>(
        &mut self,
        handle: &str,
        mode: PolicyMode,
        fingerprint: u64,
        recipients: impl IntoIterator<Item = R>,
        spec: FanoutSpec,
        now_ms: u64,
    ) -> u32 {
        let hashes: Vec<u64> = recipients
            .into_iter()
            .map(|r| self.hasher.hash_one(r))
            .collect();
        let state = &mut self.sender(handle, now_ms).modes[slot(mode)];
        let horizon = now_ms.saturating_sub(spec.window_ms);
        state.fanout.retain_mut(|f| {
            f.recipients.retain(|(_, seen)| *seen > horizon);
            !f.recipients.is_empty()
        });
        let index = match state
            .fanout
            .iter()
            .position(|f| f.fingerprint == fingerprint)
        {
            Some(index) => index,
            None => {
                if state.fanout.len() >= MAX_FINGERPRINTS
                    && let Some(oldest) = state
                        .fanout
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, f)| f.last_ms)
                        .map(|(i, _)| i)
                {
                    state.fanout.swap_remove(oldest);
                }
                state.fanout.push(Fanout {
                    fingerprint,
                    recipients: Vec::new(),
                    last_ms: now_ms,
                });
                state.fanout.len() - 1
            }
        };
        let entry = &mut state.fanout[index];
        entry.last_ms = now_ms;
        let cap = spec.distinct.max(1) as usize;
        for hash in hashes {
            if let Some(seen) = entry.recipients.iter_mut().find(|(r, _)| *r == hash) {
                seen.1 = now_ms;
            } else if entry.recipients.len() < cap {
                entry.recipients.push((hash, now_ms));
            }
        }
        entry.recipients.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENFORCE: PolicyMode = PolicyMode::Enforce;

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let mut tracker = SenderTracker::default();
        let spec = RateSpec {
            messages: 3,
            per_ms: 3_000,
        };
        let over: Vec<bool> = (0..5)
            .map(|_| tracker.over_rate("a", ENFORCE, spec, 10_000))
            .collect();
        assert_eq!(over, [false, false, false, true, true]);
        assert!(
            !tracker.over_rate("a", ENFORCE, spec, 11_000),
            "one message refilled after a second"
        );
        assert!(tracker.over_rate("a", ENFORCE, spec, 11_000));
        assert!(
            !tracker.over_rate("b", ENFORCE, spec, 11_000),
            "senders are independent"
        );
    }

    #[test]
    fn fan_out_counts_distinct_recipients_within_the_window() {
        let mut tracker = SenderTracker::default();
        let spec = FanoutSpec {
            distinct: 3,
            window_ms: 60_000,
        };
        assert_eq!(tracker.fan_out("a", ENFORCE, 7, ["b"], spec, 0), 1);
        assert_eq!(
            tracker.fan_out("a", ENFORCE, 7, ["b"], spec, 1_000),
            1,
            "same recipient again"
        );
        assert_eq!(
            tracker.fan_out("a", ENFORCE, 8, ["c"], spec, 2_000),
            1,
            "another item"
        );
        assert_eq!(tracker.fan_out("a", ENFORCE, 7, ["c", "d"], spec, 3_000), 3);
        assert_eq!(
            tracker.fan_out("a", ENFORCE, 7, ["e"], spec, 200_000),
            1,
            "window passed"
        );
    }

    #[test]
    fn quarantine_expires() {
        let mut tracker = SenderTracker::default();
        tracker.quarantine("a", 5_000, "p/worm".into(), 0);
        assert_eq!(
            tracker.quarantined("a", 4_999).map(|q| q.0),
            Some("p/worm".into())
        );
        assert!(tracker.quarantined("a", 5_000).is_none());
    }

    #[test]
    fn memory_stays_bounded() {
        let mut tracker = SenderTracker::with_capacity(100);
        let spec = FanoutSpec {
            distinct: 5,
            window_ms: 1_000_000,
        };
        for i in 0..10_000u64 {
            tracker.fan_out(&format!("sender{i}"), ENFORCE, i, [i, i + 1], spec, i);
            tracker.fan_out("one", ENFORCE, i, (0..100).map(|r| r + i), spec, i);
        }
        assert!(tracker.len() <= 100);
        let one = &tracker.senders["one"].modes[0];
        assert!(one.fanout.len() <= MAX_FINGERPRINTS);
        assert!(one.fanout.iter().all(|f| f.recipients.len() <= 5));
    }
}
