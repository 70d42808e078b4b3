//! The leaves an interception CA has minted, by server name: a bounded least-recently-used
//! cache whose entries are minted again once they are older than their time to live, and a
//! token bucket that limits how fast new leaves may be minted. Names are chosen by clients,
//! so neither the cache nor the minting may grow with what they ask for.
//!
//! Invariants:
//! - at most `capacity` names are kept; the least recently used goes first;
//! - an entry older than the time to live is never given out (it is dropped when found);
//! - at most `burst` mints are allowed at once, and `per_second` a second after that;
//! - time is passed in, so that every rule can be tested without waiting.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Minting was refused: too many new names too fast.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "too many new server names to mint certificates for (more than {per_second} a second); \
     the session is refused and later ones will be served"
)]
pub struct RateLimited {
    /// The sustained rate allowed.
    pub per_second: u32,
}

/// Cached values by name, with their age, and the minting budget.
pub struct LeafCache<V> {
    entries: LruCache<String, (Instant, V)>,
    ttl: Duration,
    bucket: Bucket,
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: u32,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> Result<(), RateLimited> {
        // Callers read the clock before they take the lock, so `now` may be behind `last`.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.per_second)).min(self.burst);
        if self.tokens < 1.0 {
            return Err(RateLimited {
                per_second: self.per_second,
            });
        }
        self.tokens -= 1.0;
        Ok(())
    }
}

impl<V: Clone> LeafCache<V> {
    /// An empty cache of `capacity` names whose entries live `ttl`, allowing `burst` mints at
    /// once and `per_second` after that.
    pub fn new(
        capacity: NonZeroUsize,
        ttl: Duration,
        burst: u32,
        per_second: u32,
        now: Instant,
    ) -> Self {
        Self {
            entries: LruCache::new(capacity),
            ttl,
            bucket: Bucket {
                tokens: f64::from(burst),
                burst: f64::from(burst),
                per_second,
                last: now,
            },
        }
    }

    /// The value for `name` if it is younger than the time to live.
    pub fn get(&mut self, name: &str, now: Instant) -> Option<V> {
        let (made, value) = self.entries.get(name)?;
        if now.saturating_duration_since(*made) < self.ttl {
            return Some(value.clone());
        }
        self.entries.pop(name);
        None
    }

    /// Takes one mint from the budget.
    pub fn allow_mint(&mut self, now: Instant) -> Result<(), RateLimited> {
        self.bucket.take(now)
    }

    /// Keeps `value` for `name`, made at `now`, unless a fresh one was kept meanwhile; gives
    /// the value kept.
    pub fn insert(&mut self, name: &str, value: V, now: Instant) -> V {
        if let Some(kept) = self.get(name, now) {
            return kept;
        }
        self.entries.put(name.to_owned(), (now, value.clone()));
        value
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no name is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, now: Instant) -> LeafCache<u32> {
        LeafCache::new(
            NonZeroUsize::new(capacity).expect("capacity"),
            Duration::from_secs(100),
            3,
            2,
            now,
        )
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_drops_the_least_recently_used() {
        let now = Instant::now();
        let mut cache = cache(2, now);
        cache.insert("a", 1, now);
        cache.insert("b", 2, now);
        assert_eq!(cache.get("a", now), Some(1), "a is now the most recent");
        cache.insert("c", 3, now);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b", now), None, "b was the least recently used");
        assert_eq!(cache.get("a", now), Some(1));
        assert_eq!(cache.get("c", now), Some(3));
    }

    #[test]
    fn an_entry_past_its_time_to_live_is_never_given_out() {
        let now = Instant::now();
        let mut cache = cache(2, now);
        cache.insert("a", 1, now);
        assert_eq!(cache.get("a", now + Duration::from_secs(99)), Some(1));
        assert_eq!(cache.get("a", now + Duration::from_secs(100)), None);
        assert!(cache.is_empty(), "the stale entry is dropped");
        assert_eq!(
            cache.insert("a", 2, now + Duration::from_secs(100)),
            2,
            "and made again"
        );
    }

    #[test]
    fn a_fresh_entry_kept_meanwhile_wins_over_a_second_mint() {
        let now = Instant::now();
        let mut cache = cache(2, now);
        assert_eq!(cache.insert("a", 1, now), 1);
        assert_eq!(cache.insert("a", 2, now), 1, "the first one minted is kept");
    }

    #[test]
    fn mints_are_allowed_in_a_burst_then_at_the_rate() {
        let start = Instant::now();
        let mut cache = cache(8, start);
        for _ in 0..3 {
            cache.allow_mint(start).expect("within the burst");
        }
        assert_eq!(
            cache.allow_mint(start),
            Err(RateLimited { per_second: 2 }),
            "the burst is spent"
        );
        let later = start + Duration::from_millis(500);
        cache
            .allow_mint(later)
            .expect("one more after half a second");
        assert!(cache.allow_mint(later).is_err());
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            cache.allow_mint(much_later).expect("the bucket refills");
        }
        assert!(
            cache.allow_mint(much_later).is_err(),
            "to its burst, not beyond"
        );
    }
}
