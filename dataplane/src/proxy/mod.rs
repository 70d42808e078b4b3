//! The proxy: everything that moves bytes between clients and IM servers: the front ends
//! (SOCKS5, HTTP CONNECT, port-forwards), protocol identification, the per-session pipeline
//! and the protocol relays.

pub mod admission;
pub mod budget;
pub mod copies;
pub mod destination;
pub mod frontend;
pub mod irc_relay;
pub mod leaf_cache;
pub mod lean_io;
pub mod peek;
pub mod pieces;
pub mod server;
pub mod session;
pub mod shared;
pub mod tls;
pub mod tls_stream;
pub mod unread_relay;
pub mod upstream_verifier;
pub mod xmpp_direct_tls;
mod xmpp_inspect;
mod xmpp_judge;
pub mod xmpp_relay;
pub mod xmpp_rooms;
