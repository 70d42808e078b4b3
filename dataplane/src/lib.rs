//! imgate's dataplane: everything on the path of a message.
//!
//! Today this crate holds the inspection core ([`inspect`]): the event model that protocol
//! parsers produce and the policy engine that turns events into verdicts. It performs no I/O,
//! so it can be tested deterministically, fuzzed and benchmarked on its own.
#![forbid(unsafe_code)]

pub mod archive;
pub mod identity;
pub mod inspect;
pub mod proxy;
pub mod telemetry;
