//! The tunnel's stream header and reply: any bytes decode to an item, a request for more or
//! an error; what decodes re-encodes to bytes that decode to the same item.
#![no_main]

use imgate_dataplane::tunnel::header::{Decoded, Reply, StreamHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Complete(header, used)) = StreamHeader::decode(data) {
        assert!(used <= data.len());
        let encoded = header.encode().expect("a decoded header encodes");
        assert_eq!(
            StreamHeader::decode(&encoded),
            Ok(Decoded::Complete(header, encoded.len()))
        );
    }
    if let Ok(Decoded::Complete(reply, used)) = Reply::decode(data) {
        assert!(used <= data.len());
        let encoded = reply.encode();
        assert_eq!(
            Reply::decode(&encoded),
            Ok(Decoded::Complete(reply, encoded.len()))
        );
    }
});
