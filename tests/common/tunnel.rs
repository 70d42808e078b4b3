//! `imgate tunnel` and `imgate connector` as a tenant and a customer site use them: a token
//! minted beside the dataplane, a connector enrolled with it, and the connector running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{Killed, free_port, serve_logged};

fn imgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgate"))
}

/// Mints a one-time token for connector `id` from the tunnel folder of the dataplane whose
/// data is in `data`.
pub fn mint_token(data: &Path, id: &str) -> String {
    let output = imgate()
        .args(["tunnel", "token", "--connector", id, "--data"])
        .arg(data)
        .output()
        .expect("imgate tunnel token runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `imgate connector enroll` with `token` against `dataplanes`, into `identity`.
pub fn enroll(token: &str, dataplanes: &[SocketAddr], identity: &Path) -> Output {
    let mut command = imgate();
    command.args(["connector", "enroll", "--token", token, "--identity"]);
    command.arg(identity);
    for dataplane in dataplanes {
        command.args(["--dataplane", &dataplane.to_string()]);
    }
    command.output().expect("imgate connector enroll runs")
}

/// Runs `imgate connector renew` for the identity in `identity` against `dataplane`.
pub fn renew(identity: &Path, dataplane: SocketAddr) -> Output {
    imgate()
        .args(["connector", "renew", "--dataplane", &dataplane.to_string()])
        .arg("--identity")
        .arg(identity)
        .output()
        .expect("imgate connector renew runs")
}

/// Enrolls connector `id` with a fresh token from `data`; returns its identity folder under
/// `dir`.
pub fn enrolled(dir: &Path, data: &Path, id: &str, dataplanes: &[SocketAddr]) -> PathBuf {
    let identity = dir.join(format!("connector-{id}"));
    let output = enroll(&mint_token(data, id), dataplanes, &identity);
    assert!(
        output.status.success(),
        "enrollment: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    identity
}

/// A running `imgate connector`.
pub struct Running {
    /// The process.
    pub process: Killed,
    /// Its port-forward's local port.
    pub port: u16,
    /// Its metrics and health port.
    pub metrics: u16,
    /// Its standard error.
    pub log: PathBuf,
}

/// Runs the connector of `identity` (its standard error beside it, in `.log`), dialling
/// `dataplanes` (addresses or names), with a port-forward to `server` through the tunnel and
/// the `extra` options.
pub fn run_connector(
    identity: &Path,
    dataplanes: &[impl std::fmt::Display],
    server: &str,
    extra: &[&str],
) -> Running {
    run_connector_with_env(identity, dataplanes, server, extra, &[])
}

/// [`run_connector`] with the environment variables `env` set.
pub fn run_connector_with_env(
    identity: &Path,
    dataplanes: &[impl std::fmt::Display],
    server: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let port = free_port();
    let metrics = free_port();
    let mut command = imgate();
    command.envs(env.iter().copied());
    command
        .args(["connector", "run", "--socks", "off", "--identity"])
        .arg(identity)
        .args(["--metrics", &format!("127.0.0.1:{metrics}"), "--forward"])
        .arg(format!("127.0.0.1:{port}={server}"));
    for dataplane in dataplanes {
        command.args(["--dataplane", &dataplane.to_string()]);
    }
    command.args(extra);
    let log = identity.with_extension("log");
    let process = serve_logged(&mut command, port, "imgate connector", &log);
    Running {
        process,
        port,
        metrics,
        log,
    }
}

/// Waits until the connector's `/healthz` says it is connected; returns the answer.
pub fn wait_until_connected(connector: &Running) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let health = super::http_get(connector.metrics, "/healthz");
        if health.starts_with("HTTP/1.1 200") {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the connector did not connect within 30 s: {health}\n{}",
            std::fs::read_to_string(&connector.log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
