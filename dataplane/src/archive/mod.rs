//! The compliance archive: every event with its verdict, written to a local write-ahead log
//! ([`log`], [`wal`]), sealed into hash-chained segments ([`segment`]), shipped to the
//! tenant's object store ([`shipper`], [`store`]) and checked end to end ([`verify`]).
//!
//! Invariants across the whole path: a record is acknowledged only once it is fsynced;
//! records keep one per-writer sequence with no gaps from log to segment to store; data is
//! deleted locally only after the store acknowledged it; damage is reported with its
//! location, never skipped. The record format is documented in `docs/archive-format.md`.

pub mod draft;
pub mod error;
pub mod export;
pub mod fs;
pub mod log;
mod log_commit;
pub mod read;
pub mod record;
pub mod segment;
pub mod ship_health;
pub mod shipper;
pub mod store;
pub mod tail;
pub mod unended;
pub mod verify;
pub mod wal;

#[cfg(test)]
mod housekeeping_tests;
#[cfg(test)]
mod reopen_tests;
#[cfg(test)]
mod tests;

pub use draft::Draft;
pub use error::ArchiveError;
pub use log::{ArchiveLog, LogConfig};
pub use record::{Body, Record};
pub use ship_health::{ShipHealth, ShipMonitor};
pub use shipper::{Shipper, ShipperConfig, Unflushed};
pub use store::Store;
