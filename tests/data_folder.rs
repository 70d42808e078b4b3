//! A data folder belongs to one `imgate up` at a time: a second process on it (a restart that
//! overlaps the previous one's shutdown flush) is refused with a clear message before it
//! touches the archive log, and a process killed with `kill -9` lets go of it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LogsOnFailure, free_port, imgate_up};

/// Runs `imgate up` on `data`, expecting it to exit on its own; its exit code and what it
/// printed. A process still running after two minutes is killed and fails the test.
fn up_expecting_exit(data: &std::path::Path) -> (Option<i32>, String) {
    let output = data.with_extension("second.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["up", "--socks", "off", "--http", "off", "--metrics", "off"])
        .args([
            "--forward",
            &format!("127.0.0.1:{}=127.0.0.1:9", free_port()),
        ])
        .arg("--data")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&output).expect("log"))
        .spawn()
        .expect("imgate up starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("its state") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second imgate up on the same data folder kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&output).unwrap_or_default(),
    )
}

#[test]
fn a_second_process_on_a_data_folder_is_refused_and_a_killed_one_lets_go() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let (first, _) = imgate_up(free_port(), &data, &[]);
    let wal_before = std::fs::read_dir(data.join("wal"))
        .expect("the first one's log")
        .count();

    let (code, said) = up_expecting_exit(&data);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "another imgate (pid {}) is using the data folder",
            first.0.id()
        )),
        "{said}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("wal")).expect("log").count(),
        wal_before,
        "the refused process opened nothing in the log"
    );

    // kill -9: the operating system releases the lock with the process.
    drop(first);
    let (again, _) = imgate_up(free_port(), &data, &[]);
    drop(again);
}
