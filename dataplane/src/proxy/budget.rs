//! A bound on the bytes all sessions of a dataplane hold in their read buffers together, and
//! on what the sessions of one client address hold, so that many connections each sending
//! the start of a large element cannot take the memory (2,500 connections each holding an
//! unfinished 255 KiB stanza would hold 640 MB), nor one address most of it.
//!
//! Invariants: a buffer's first [`FREE`] bytes are never counted, so ordinary sessions never
//! meet the bound; the bytes counted never exceed the limit in all, nor the limit per source
//! for one address; a session whose buffer would take either over is refused more (its read
//! fails) and keeps what it was counted for until it ends; whatever a session was counted
//! for is given back when its buffer is dropped, and an address holding nothing has no entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Bytes of each read buffer not counted.
pub const FREE: usize = 16 << 10;

/// The limit by default.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// The limit for one client address by default.
pub const DEFAULT_PER_SOURCE: usize = 32 << 20;

/// The bytes counted, in all and by client address, and the limits.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    per_source: usize,
    used: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a buffer may not grow.
#[derive(Debug, thiserror::Error)]
pub enum Spent {
    /// The dataplane's limit.
    #[error(
        "the dataplane's read buffers hold their limit ({0} bytes in all beyond {FREE} each): \
         this session may not buffer more"
    )]
    All(usize),
    /// The limit for one address.
    #[error(
        "the read buffers of this client address's sessions hold their limit ({0} bytes beyond \
         {FREE} each): this session may not buffer more"
    )]
    Source(usize),
}

impl Budget {
    /// At most `limit` bytes beyond the free ones in all, and `per_source` for the sessions
    /// of one client address.
    pub fn new(limit: usize, per_source: usize) -> Self {
        Self {
            limit,
            per_source,
            used: Mutex::default(),
        }
    }

    /// Counts a buffer of `length` bytes of a session from `address` (counted with its
    /// [source](super::admission::source_of)) that was counted for `*counted`; on success
    /// `*counted` is what it is counted for now.
    pub fn count(&self, address: IpAddr, counted: &mut usize, length: usize) -> Result<(), Spent> {
        let source = super::admission::source_of(address);
        let wanted = length.saturating_sub(FREE);
        if wanted == *counted {
            return Ok(());
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (all, by_source) = &mut *used;
        let mine = by_source.entry(source).or_default();
        if wanted > *counted {
            let more = wanted - *counted;
            if *mine + more > self.per_source {
                if *mine == 0 {
                    by_source.remove(&source);
                }
                return Err(Spent::Source(self.per_source));
            }
            if *all + more > self.limit {
                if *mine == 0 {
                    by_source.remove(&source);
                }
                return Err(Spent::All(self.limit));
            }
            *mine += more;
            *all += more;
        } else {
            let less = *counted - wanted;
            *mine -= less;
            *all -= less;
            if *mine == 0 {
                by_source.remove(&source);
            }
        }
        *counted = wanted;
        Ok(())
    }

    /// Gives back what a buffer of a session from `source` was counted for.
    pub fn release(&self, source: IpAddr, counted: usize) {
        let mut counted = counted;
        // Counting down to nothing never fails.
        let _ = self.count(source, &mut counted, 0);
    }

    /// Bytes counted now, in all.
    pub fn used(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Client addresses holding counted bytes now.
    pub fn sources(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT, DEFAULT_PER_SOURCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn buffers_are_counted_beyond_their_free_part_up_to_the_limit() {
        let budget = Budget::new(100 << 10, 100 << 10);
        let (mut a, mut b) = (0, 0);
        budget.count(A, &mut a, 10 << 10).expect("free");
        assert_eq!((a, budget.used()), (0, 0));
        budget.count(A, &mut a, FREE + (60 << 10)).expect("counted");
        assert_eq!(budget.used(), 60 << 10);
        assert!(matches!(
            budget.count(B, &mut b, FREE + (50 << 10)),
            Err(Spent::All(_))
        ));
        assert_eq!(
            (b, budget.used(), budget.sources()),
            (0, 60 << 10, 1),
            "a refusal counts nothing"
        );
        budget.count(A, &mut a, FREE).expect("shrinks");
        assert_eq!((a, budget.used(), budget.sources()), (0, 0, 0));
        budget
            .count(B, &mut b, FREE + (50 << 10))
            .expect("room again");
        budget.release(B, b);
        assert_eq!((budget.used(), budget.sources()), (0, 0));
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_others_still_get_theirs() {
        let budget = Budget::new(1 << 20, 100 << 10);
        let (mut first, mut second, mut other) = (0, 0, 0);
        budget
            .count(A, &mut first, FREE + (60 << 10))
            .expect("counted");
        assert!(matches!(
            budget.count(A, &mut second, FREE + (50 << 10)),
            Err(Spent::Source(_))
        ));
        budget
            .count(B, &mut other, FREE + (90 << 10))
            .expect("another address has its own share");
        budget.release(A, first);
        budget
            .count(A, &mut second, FREE + (50 << 10))
            .expect("room for the address again");
        budget.release(A, second);
        budget.release(B, other);
        assert_eq!((budget.used(), budget.sources()), (0, 0));
    }
}
