//! The XMPP framer and stanza parser: any bytes, fed in two reads split where the input says,
//! are cut into items that never claim more bytes than they were given, and every element
//! parses or is refused without a panic.
#![no_main]

use imgate_dataplane::inspect::xmpp::{Framer, Item, Stanza};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let mut framer = Framer::default();
    let mut buffer = data[..split].to_vec();
    let mut rest = &data[split..];
    loop {
        match framer.next(&buffer) {
            Item::Header { consumed, .. }
            | Item::Whitespace { consumed }
            | Item::Close { consumed } => {
                assert!(consumed > 0 && consumed <= buffer.len());
                buffer.drain(..consumed);
            }
            Item::Element { bytes, consumed } => {
                assert!(consumed > 0 && consumed <= buffer.len());
                assert!(bytes.len() <= consumed);
                let _ = Stanza::parse(bytes);
                buffer.drain(..consumed);
            }
            Item::NeedMore if !rest.is_empty() => {
                buffer.extend_from_slice(rest);
                rest = &[];
            }
            Item::NeedMore | Item::TooLarge | Item::Malformed { .. } => break,
        }
    }
});
