//! Helpers shared by the end-to-end tests that run `imgate up` between real IM servers and
//! clients.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when the test ends, whatever happens.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops `imgate up` with SIGTERM (which flushes the archive) and returns every archived
/// record of tenant `local` under `data`.
pub fn stop_and_read(imgate: Killed, data: &Path) -> Vec<Value> {
    let mut imgate = imgate;
    assert!(
        Command::new("kill")
            .args(["-TERM", &imgate.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while imgate.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "imgate up did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let search = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["archive", "--tenant", "local", "--dir"])
        .arg(data.join("archive"))
        .args(["search", "--json"])
        .output()
        .expect("imgate archive runs");
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    String::from_utf8_lossy(&search.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}
