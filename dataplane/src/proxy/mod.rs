//! The proxy: everything that moves bytes between clients and IM servers. Today it holds the
//! protocol-identification step that every session starts with.

pub mod frontend;
pub mod peek;
