//! The IRC framer and message parser: lines are cut within what was given, and each line
//! parses or is refused without a panic; a parsed message's event and its re-encoding never
//! panic either.
#![no_main]

use imgate_dataplane::inspect::irc::{Frame, Message, next_line, with_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buffer = data;
    loop {
        match next_line(buffer) {
            Frame::Line { line, consumed } => {
                assert!(consumed > 0 && consumed <= buffer.len() && line.len() < consumed);
                if let Ok(message) = Message::parse(line) {
                    let _ = message.event();
                    let _ = message.to_line();
                    let _ = with_text(&message, "redacted ████");
                }
                buffer = &buffer[consumed..];
            }
            Frame::Oversized { consumed } => {
                assert!(consumed > 0 && consumed <= buffer.len());
                buffer = &buffer[consumed..];
            }
            Frame::NeedMore => break,
        }
    }
});
