//! The inspection core: pure code with no I/O, clocks or global state. Time enters only as
//! the timestamp carried by each [`event::Event`]; bytes enter as slices.

pub mod detect;
pub mod detect_server;
pub mod event;
pub mod irc;
pub mod irc_credentials;
pub mod policy;
pub mod services;
pub mod tls_hello;
pub mod xmpp;
