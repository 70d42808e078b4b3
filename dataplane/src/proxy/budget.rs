//! A bound on the bytes all sessions of a dataplane hold in their read buffers together, so
//! that many connections each sending the start of a large element cannot take the memory
//! (2,500 connections each holding an unfinished 255 KiB stanza would hold 640 MB).
//!
//! Invariants: a buffer's first [`FREE`] bytes are never counted, so ordinary sessions never
//! meet the bound; the bytes counted never exceed the limit; a session whose buffer would take
//! it over the limit is refused more (its read fails) and keeps what it was counted for until
//! it ends; whatever a session was counted for is given back when its buffer is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of each read buffer not counted.
pub const FREE: usize = 16 << 10;

/// The limit by default.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// The bytes counted, and the limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// Why a buffer may not grow.
#[derive(Debug, thiserror::Error)]
#[error(
    "the dataplane's read buffers hold their limit ({limit} bytes in all beyond {FREE} each): \
     this session may not buffer more"
)]
pub struct Spent {
    /// The limit.
    pub limit: usize,
}

impl Budget {
    /// At most `limit` bytes beyond the free ones, in all.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Counts a buffer of `length` bytes that was counted for `*counted`; on success
    /// `*counted` is what it is counted for now.
    pub fn count(&self, counted: &mut usize, length: usize) -> Result<(), Spent> {
        let wanted = length.saturating_sub(FREE);
        if wanted <= *counted {
            self.used.fetch_sub(*counted - wanted, Ordering::Relaxed);
            *counted = wanted;
            return Ok(());
        }
        let more = wanted - *counted;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + more > self.limit {
                return Err(Spent { limit: self.limit });
            }
            match self.used.compare_exchange_weak(
                used,
                used + more,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    *counted = wanted;
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }

    /// Gives back what a buffer was counted for.
    pub fn release(&self, counted: usize) {
        self.used.fetch_sub(counted, Ordering::Relaxed);
    }

    /// Bytes counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_counted_beyond_their_free_part_up_to_the_limit() {
        let budget = Budget::new(100 << 10);
        let (mut a, mut b) = (0, 0);
        budget.count(&mut a, 10 << 10).expect("free");
        assert_eq!((a, budget.used()), (0, 0));
        budget.count(&mut a, FREE + (60 << 10)).expect("counted");
        assert_eq!(budget.used(), 60 << 10);
        assert!(
            budget.count(&mut b, FREE + (50 << 10)).is_err(),
            "over the limit"
        );
        assert_eq!(
            (b, budget.used()),
            (0, 60 << 10),
            "a refusal counts nothing"
        );
        budget.count(&mut a, FREE).expect("shrinks");
        assert_eq!((a, budget.used()), (0, 0));
        budget.count(&mut b, FREE + (50 << 10)).expect("room again");
        budget.release(b);
        assert_eq!(budget.used(), 0);
    }
}
