//! Where clients may go: SOCKS5 and HTTP CONNECT clients name any `host:port`, and the
//! dataplane refuses the network it runs in (loopback and its own metrics port, the cloud's
//! instance metadata, private ranges) before dialling anything, with one reply for refused,
//! unreachable and silent destinations and a record in the archive; a network the operator
//! allows (`--allow-destination`) is reached.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use common::{Killed, LogsOnFailure, free_port, serve_logged, stop_and_read};

/// `imgate up` with SOCKS5 and HTTP CONNECT on free ports, metrics on another, and `extra`;
/// returns it and the three ports.
fn imgate_up(data: &Path, extra: &[&str]) -> (Killed, u16, u16, u16) {
    let (socks, http, metrics) = (free_port(), free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_imgate"));
    command
        .args(["up", "--seal-seconds", "1"])
        .args(["--socks", &format!("127.0.0.1:{socks}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .arg("--data")
        .arg(data)
        .args(extra);
    let log = data.with_extension("log");
    let imgate = serve_logged(&mut command, http, "imgate up", &log);
    common::wait_for_port(socks, "imgate up's SOCKS5 listener");
    (imgate, socks, http, metrics)
}

/// Asks imgate's SOCKS5 listener on `socks` for `host:port`; the reply code and the open
/// connection.
fn socks5(socks: u16, host: &str, port: u16) -> (u8, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", socks)).expect("SOCKS5 listener");
    stream.write_all(&[5, 1, 0]).expect("greeting");
    let mut chosen = [0; 2];
    stream.read_exact(&mut chosen).expect("method");
    assert_eq!(chosen, [5, 0]);
    let mut request = vec![5, 1, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            request.push(1);
            request.extend(v4.octets());
        }
        Ok(IpAddr::V6(v6)) => {
            request.push(4);
            request.extend(v6.octets());
        }
        Err(_) => {
            request.push(3);
            request.push(u8::try_from(host.len()).expect("a short name"));
            request.extend(host.as_bytes());
        }
    }
    request.extend(port.to_be_bytes());
    stream.write_all(&request).expect("request");
    let mut reply = [0; 10];
    stream.read_exact(&mut reply).expect("a reply");
    (reply[1], stream)
}

/// Asks imgate's HTTP CONNECT listener on `http` for `target`; the status line.
fn connect(http: u16, target: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", http)).expect("HTTP CONNECT listener");
    write!(
        stream,
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
    )
    .expect("request");
    let mut answer = Vec::new();
    let mut byte = [0];
    while !answer.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).expect("a status line");
        answer.push(byte[0]);
    }
    String::from_utf8_lossy(&answer).trim().to_owned()
}

#[test]
fn the_network_the_dataplane_runs_in_is_refused_with_one_answer_and_a_record() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let (imgate, socks, http, metrics) = imgate_up(&data, &[]);
    // Refused before anything is dialled: no packet leaves for any of them.
    for (host, port) in [
        ("127.0.0.1", metrics),
        ("localhost", metrics),
        ("169.254.169.254", 80),
        ("10.0.0.1", 5222),
        ("::1", metrics),
    ] {
        let (code, _) = socks5(socks, host, port);
        assert_eq!(
            code, 4,
            "SOCKS5 {host}:{port}: host unreachable, whatever the cause"
        );
    }
    for target in [format!("127.0.0.1:{metrics}"), "169.254.169.254:80".into()] {
        assert_eq!(
            connect(http, &target),
            "HTTP/1.1 502 Bad Gateway",
            "{target}"
        );
    }
    let records = stop_and_read(imgate, &data);
    let refused: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "session_end")
        .filter_map(|r| r["reason"].as_str())
        .filter(|reason| reason.starts_with("destination refused"))
        .collect();
    for why in [
        "127.0.0.1 is loopback",
        "169.254.169.254 is link-local (where clouds serve instance metadata)",
        "10.0.0.1 is private (RFC 1918)",
        "::1 is loopback",
    ] {
        assert!(
            refused.iter().any(|reason| reason.ends_with(why)),
            "no record says {why:?}: {refused:#?}"
        );
    }
    assert_eq!(
        refused.len(),
        7,
        "each refused request is archived: {refused:#?}"
    );
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    assert!(
        log.contains("destination refused: 169.254.169.254 is link-local"),
        "{log}"
    );
}

#[test]
fn a_network_the_operator_allows_is_reached() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let server = TcpListener::bind("127.0.0.1:0").expect("a server");
    let port = server.local_addr().expect("its address").port();
    // The server speaks a protocol imgate does not know: a policy that lets it through.
    let (_imgate, socks, _, _) = imgate_up(
        &data,
        &[
            "--allow-destination",
            "127.0.0.0/8",
            "--policy",
            common::RELAY_UNIDENTIFIED,
        ],
    );
    let (code, mut client) = socks5(socks, "127.0.0.1", port);
    assert_eq!(code, 0, "connected");
    let (mut accepted, _) = server.accept().expect("the session reached the server");
    accepted
        .write_all(b"* OK\r\n")
        .expect("the server speaks first");
    let mut greeting = [0; 6];
    client.read_exact(&mut greeting).expect("relayed");
    assert_eq!(&greeting, b"* OK\r\n");
    let (code, _) = socks5(socks, "169.254.169.254", 80);
    assert_eq!(code, 4, "what is not allowed stays refused");
    // A port nothing listens on gets the answer a refused destination gets.
    drop(server);
    let (code, _) = socks5(socks, "127.0.0.1", port);
    assert_eq!(code, 4, "unreachable and refused look the same");
}

#[test]
fn a_refused_destination_is_never_dialled_and_a_fixed_forward_needs_no_allowance() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let server = TcpListener::bind("127.0.0.2:0").expect("a server on 127.0.0.2");
    server.set_nonblocking(true).expect("non-blocking");
    let port = server.local_addr().expect("its address").port();
    let forward = free_port();
    let (_imgate, socks, _, _) = imgate_up(
        &data,
        &[
            "--allow-destination",
            "127.0.0.1/32",
            "--forward",
            &format!("127.0.0.1:{forward}=127.0.0.2:{port}"),
        ],
    );
    let (code, _) = socks5(socks, "127.0.0.2", port);
    assert_eq!(code, 4, "127.0.0.2 is not in the allowed 127.0.0.1/32");
    // The answer comes after the decision, so a dial would have arrived by now.
    let attempt = server.accept();
    assert!(
        matches!(&attempt, Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
        "the refused destination was dialled: {attempt:?}"
    );
    // The operator's own forward to the same server is not a client's choice.
    common::wait_for_port(forward, "imgate up's forward");
    let _client = TcpStream::connect(("127.0.0.1", forward)).expect("the forward");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match server.accept() {
            Ok(_) => break,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the forward never dialled"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("accept: {error}"),
        }
    }
}

/// A server on 127.0.0.1, and `imgate up` allowed to reach loopback, with `extra` (given the
/// server's port); the reasons its sessions ended are read once it stops.
struct Loopback {
    _dir: tempfile::TempDir,
    _logs: LogsOnFailure,
    data: std::path::PathBuf,
    server: TcpListener,
    port: u16,
    imgate: Killed,
    socks: u16,
    http: u16,
}

impl Loopback {
    fn start(extra: impl Fn(u16) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let data = dir.path().join("data");
        let logs = LogsOnFailure(vec![data.with_extension("log")]);
        let server = TcpListener::bind("127.0.0.1:0").expect("a server");
        let port = server.local_addr().expect("its address").port();
        let mut args = vec![
            "--allow-destination",
            "127.0.0.0/8",
            "--allow-destination",
            "::1",
        ];
        let extra = extra(port);
        args.extend(extra.iter().map(String::as_str));
        let (imgate, socks, http, _) = imgate_up(&data, &args);
        Self {
            _dir: dir,
            _logs: logs,
            data,
            server,
            port,
            imgate,
            socks,
            http,
        }
    }

    /// Stops imgate; the `reason` of every `session_end` record.
    fn end_reasons(self) -> Vec<String> {
        drop(self.server);
        stop_and_read(self.imgate, &self.data)
            .iter()
            .filter(|r| r["type"] == "session_end")
            .filter_map(|r| r["reason"].as_str().map(str::to_owned))
            .collect()
    }
}

#[test]
fn a_tenants_denied_domains_and_ports_are_refused_even_where_allowed() {
    let lo = Loopback::start(|port| {
        [
            "--deny-destination",
            "localhost",
            "--allow-port",
            &port.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    });
    let (server, port, socks, http) = (&lo.server, lo.port, lo.socks, lo.http);
    let (code, _client) = socks5(socks, "127.0.0.1", port);
    assert_eq!(
        code, 0,
        "the allowed address on the allowed port is reached"
    );
    let (_accepted, _) = server.accept().expect("the session reached the server");
    let (code, _) = socks5(socks, "localhost", port);
    assert_eq!(code, 4, "a denied name, although its addresses are allowed");
    assert_eq!(
        connect(http, &format!("127.0.0.1:{}", port.wrapping_add(1).max(1))),
        "HTTP/1.1 502 Bad Gateway",
        "a port outside the allowed ones"
    );
    let reasons = lo.end_reasons();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("localhost is in localhost, which the tenant denies")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("is not among the tenant's allowed ports")),
        "{reasons:?}"
    );
}

#[test]
fn once_a_domain_is_allowed_other_names_are_refused_before_they_are_looked_up() {
    let lo = Loopback::start(|_| vec!["--allow-destination".into(), "localhost".into()]);
    let (server, port, socks, http) = (&lo.server, lo.port, lo.socks, lo.http);
    let (code, _client) = socks5(socks, "localhost", port);
    assert_eq!(code, 0, "a name in the allowed domain is reached");
    let (_accepted, _) = server.accept().expect("the session reached the server");
    // `.invalid` never resolves (RFC 2606): the reason in the archive shows the name was
    // refused for its domain, not for a failed lookup.
    let (code, _) = socks5(socks, "im.invalid", port);
    assert_eq!(code, 4, "a name outside the allowed domains");
    assert_eq!(
        connect(http, &format!("chat.invalid:{port}")),
        "HTTP/1.1 502 Bad Gateway",
        "the same through HTTP CONNECT"
    );
    let reasons = lo.end_reasons();
    for name in ["im.invalid", "chat.invalid"] {
        assert!(
            reasons.iter().any(|r| r.contains(&format!(
                "{name} is in none of the domains the tenant allows"
            ))),
            "{name}: {reasons:?}"
        );
    }
}
