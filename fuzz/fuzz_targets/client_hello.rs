//! The TLS ClientHello reader used to identify protocols and read server names: any bytes
//! give a hello, a request for more, or a refusal, never a panic; asking for more means the
//! input really was short.
#![no_main]

use imgate_dataplane::inspect::tls_hello::{HelloRead, looks_like_tls, read_client_hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_tls(data);
    if let HelloRead::NeedMore(more) = read_client_hello(data) {
        assert!(more > 0);
    }
});
