//! How many client connections the listeners hold: at most a global number, and at most a
//! number per source address, so that one source cannot take every descriptor (and with them
//! the archive log's next file) or every slot.
//!
//! Invariants: a connection is counted from its acceptance until its [`Slot`] is dropped,
//! whatever ends it; a connection over either limit is closed at once, before anything is
//! read from it, and counted; the per-source table holds only sources with connections
//! open. A connection a connector carries through the tunnel counts against the global
//! limit only: its connector's address stands for a whole site.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The most connections by default, where the descriptor limit does not say fewer.
pub const DEFAULT_MOST: usize = 50_000;
/// The most connections from one address by default.
pub const DEFAULT_MOST_PER_SOURCE: usize = 1_000;

/// What a source is: its address, or for IPv6 its /64 network, which one host or customer
/// usually holds whole (an IPv4 address mapped into IPv6 is that IPv4 address).
pub fn source_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The limits, and what is open.
#[derive(Debug)]
pub struct Admission {
    most: usize,
    most_per_source: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The dataplane holds its most connections.
    Global,
    /// The source holds its most connections.
    Source,
}

impl Full {
    /// The label of the refusals metric.
    pub fn label(self) -> &'static str {
        match self {
            Full::Global => "connections",
            Full::Source => "connections_per_source",
        }
    }
}

/// An admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    source: Option<IpAddr>,
}

impl Admission {
    /// At most `most` connections, and `most_per_source` from one address.
    pub fn new(most: usize, most_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            most,
            most_per_source,
            open: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `address` (counted with its [source](source_of)), or
    /// why there is none.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Full> {
        let source = source_of(address);
        let mut open = self.lock();
        if open.total >= self.most {
            return Err(Full::Global);
        }
        let from_source = open.by_source.entry(source).or_default();
        if *from_source >= self.most_per_source {
            return Err(Full::Source);
        }
        *from_source += 1;
        open.total += 1;
        Ok(Slot {
            admission: self.clone(),
            source: Some(source),
        })
    }

    /// A place for a connection a connector carries, or [`Full::Global`].
    pub fn admit_carried(self: &Arc<Self>) -> Result<Slot, Full> {
        let mut open = self.lock();
        if open.total >= self.most {
            return Err(Full::Global);
        }
        open.total += 1;
        Ok(Slot {
            admission: self.clone(),
            source: None,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.admission.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(source) = self.source
            && let Some(count) = open.by_source.get_mut(&source)
        {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_limits_hold_and_a_dropped_slot_frees_its_place() {
        let admission = Admission::new(3, 2);
        let (a, b) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let first = admission.admit(a).expect("first");
        let _second = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some(Full::Source));
        let _third = admission.admit(b).expect("another source");
        assert_eq!(admission.admit(b).err(), Some(Full::Global));
        drop(first);
        assert_eq!(admission.open(), 2);
        let again = admission.admit(a).expect("a place again");
        assert_eq!(admission.lock().by_source.len(), 2);
        drop(again);
        let carried = admission.admit_carried().expect("a carried connection");
        assert_eq!(admission.lock().by_source.len(), 2, "not counted by source");
        assert_eq!(admission.admit_carried().err(), Some(Full::Global));
        drop(carried);
        assert_eq!(admission.open(), 2);
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let admission = Admission::new(10, 1);
        let host: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let _held = admission.admit(host).expect("first");
        for same in ["2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"] {
            let same: IpAddr = same.parse().expect("ip");
            assert_eq!(admission.admit(same).err(), Some(Full::Source), "{same}");
        }
        let _other = admission
            .admit("2001:db8:1:3::1".parse().expect("ip"))
            .expect("another /64");
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let _v4 = admission.admit(v4).expect("an IPv4 address");
        assert_eq!(
            admission
                .admit("::ffff:10.0.0.1".parse().expect("ip"))
                .err(),
            Some(Full::Source),
            "the same IPv4 address, mapped"
        );
    }
}
