//! What `imgate up` does when its object store fails in ways that do not look like failures:
//! a store that accepts every request and never answers. Every request has a timeout, so
//! shipping is reported as failing (log, metric, and a `system` record that marks the start of
//! the gap) and retried, and a shutdown ends within its grace, saying truthfully how many
//! records wait in the log for the next start.

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Killed, LogsOnFailure, free_port, scrape, wait_for_line, wait_for_port};

/// A "store" on loopback that takes every connection and every byte and never answers.
fn silent_store() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream: TcpStream = stream;
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

#[test]
fn a_store_that_never_answers_is_reported_and_shutdown_still_ends() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let (log, out) = (data.with_extension("log"), data.with_extension("out"));
    let _logs = LogsOnFailure(vec![log.clone(), out.clone()]);
    let store = silent_store();
    let server = TcpListener::bind("127.0.0.1:0").expect("a server");
    let server_port = server.local_addr().expect("address").port();
    let (forward, metrics) = (free_port(), free_port());
    let mut imgate = Killed(
        Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args([
                "up",
                "--socks",
                "off",
                "--http",
                "off",
                "--seal-seconds",
                "1",
            ])
            .args([
                "--forward",
                &format!("127.0.0.1:{forward}=127.0.0.1:{server_port}"),
            ])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .args(["--s3-bucket", "archive", "--s3-endpoint"])
            .arg(format!("http://127.0.0.1:{store}"))
            .args(["--store-timeout", "1s"])
            .arg("--data")
            .arg(&data)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("imgate up starts"),
    );
    wait_for_port(forward, "imgate up's forward");
    // A session leaves records to ship.
    let mut client = TcpStream::connect(("127.0.0.1", forward)).expect("the forward");
    std::io::Write::write_all(&mut client, b"hello\n").expect("a line");
    drop(server.accept().expect("the session reached the server"));
    drop(client);

    wait_for_line(&log, &["archive shipping is failing"]);
    let text = scrape(metrics);
    assert!(text.contains("imgate_archive_shipping_failing 1"), "{text}");

    assert!(
        Command::new("kill")
            .args(["-INT", &imgate.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    // Before requests had timeouts, the process never got here.
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = imgate.0.try_wait().expect("its state") {
            break status;
        }
        assert!(Instant::now() < deadline, "the shutdown never ended");
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = std::fs::read_to_string(&out).expect("its output");
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains("archive NOT flushed:")
            && said.contains("record(s) are not in the object store yet")
            && !said.contains("archive flushed:"),
        "{said}"
    );

    // The records and the marker of the gap waited in the log: a store that works takes them
    // at the next start.
    let moto = support::Moto::start();
    let endpoint = moto.endpoint();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::s3_bucket(&endpoint, "archive", false));
    let (again, _) = common::imgate_up_with_env(
        free_port(),
        &data,
        &["--s3-bucket", "archive", "--s3-endpoint", &endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let records = common::stop_and_read_s3(again, &endpoint, "archive");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "system" && r["event"] == "archive-shipping-failing"),
        "the start of the gap is in the archive: {records:?}"
    );
    assert!(
        records.iter().any(|r| r["type"] == "session_start"),
        "and the session the silent store never took: {records:?}"
    );
}
