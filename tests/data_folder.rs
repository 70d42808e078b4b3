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

#[test]
fn sessions_of_two_runs_on_one_data_folder_have_different_names() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("a server");
    let port = server.local_addr().expect("address").port();
    let mut names = Vec::new();
    for _ in 0..2 {
        let (imgate, front) = imgate_up(port, &data, &[]);
        let mut client = std::net::TcpStream::connect(("127.0.0.1", front)).expect("forward");
        std::io::Write::write_all(&mut client, b"hello\n").expect("a line");
        drop(server.accept().expect("the session reached the server"));
        drop(client);
        let records = common::stop_and_read(imgate, &data);
        names = records
            .iter()
            .filter(|r| r["type"] == "session_start")
            .filter_map(|r| r["session"].as_str().map(str::to_owned))
            .collect();
    }
    let all = names.len();
    names.sort();
    names.dedup();
    assert!(
        all >= 2 && names.len() == all && names.iter().all(|n| n.starts_with("local-0-")),
        "each session of both runs has a name of its own: {names:?}"
    );
}

#[test]
fn what_imgate_writes_is_its_users_alone_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let front = free_port();
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_imgate"))
        .args(["up", "--socks", "off", "--http", "off", "--metrics", "off"])
        .args(["--seal-seconds", "1", "--tunnel", "127.0.0.1:0"])
        .args(["--forward", &format!("127.0.0.1:{front}=127.0.0.1:9")])
        .arg("--data")
        .arg(&data);
    let imgate = common::serve_logged(
        &mut command,
        front,
        "imgate up",
        &data.with_extension("log"),
    );
    let _ = common::stop_and_read(imgate, &data);
    let mut pending = vec![data.clone()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        seen += 1;
        if meta.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .expect("a folder")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
    assert!(
        seen > 10,
        "the log, the archive, the CAs and the tunnel state: {seen}"
    );
}

#[test]
fn connections_over_the_limit_from_one_source_are_closed_at_once_and_counted() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("a server");
    let port = server.local_addr().expect("address").port();
    let metrics = free_port();
    // Silent sessions are relayed (not refused) under this policy: they stay open.
    let (_imgate, front) = imgate_up(
        port,
        &data,
        &[
            "--max-connections-per-source",
            "2",
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
            "--policy",
            common::RELAY_UNIDENTIFIED,
        ],
    );
    // From 127.0.0.2, apart from the readiness probe's 127.0.0.1.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let connect = || {
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.2:0".parse().expect("address"))
                .expect("bind");
            let stream = socket
                .connect(format!("127.0.0.1:{front}").parse().expect("address"))
                .await
                .expect("connect");
            stream.into_std().expect("std")
        })
    };
    let (_first, _second) = (connect(), connect());
    let mut third = connect();
    third.set_nonblocking(false).expect("blocking");
    let mut byte = [0u8; 1];
    assert_eq!(
        third.read(&mut byte).expect("closed, not reset"),
        0,
        "the third connection from one source is closed at once"
    );
    let text = common::scrape(metrics);
    assert!(
        text.contains("imgate_connections_refused_total{reason=\"connections_per_source\"} 1"),
        "{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let answer = common::http_get(metrics, path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
}
