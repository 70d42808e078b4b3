//! The inspection core: pure code with no I/O, clocks or global state. Time enters only as
//! the timestamp carried by each [`event::Event`].

pub mod event;
pub mod policy;
