//! The archive log's frame reader, over a log file's bytes as a crash or a hostile disk could
//! leave them: every frame read is good, bad or incomplete, the reader never reads past the
//! file, and a good frame's payload is within it.
#![no_main]

use imgate_dataplane::archive::wal::{Frame, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new(std::io::Cursor::new(data), data.len() as u64);
    loop {
        let before = reader.offset();
        match reader.read_frame() {
            Ok(Some(Frame::Good { payload, len, .. })) => {
                assert!(payload.len() < len);
                assert!(before + len as u64 <= data.len() as u64);
            }
            Ok(Some(_)) | Ok(None) | Err(_) => break,
        }
        assert!(reader.offset() > before, "a good frame moves the reader on");
    }
});
