//! The tunnel across hosts: three network namespaces joined by veth pairs. The customer host
//! runs the IM clients (slixmpp) and `imgate connector`; the cloud host runs two dataplanes
//! (`imgate up --tunnel`) of one tenant, sharing its tunnel folder and interception CA; the
//! server host runs Prosody. Chat flows client → connector → tunnel → dataplane → server and
//! back, inspected and archived. Then, under steady traffic, one dataplane is killed: the
//! connector moves to the other within 5 s, clients that reconnect carry on, and once the
//! killed dataplane is back (recovering its log) nothing archived is lost. Finally the other
//! dataplane is stopped with SIGTERM: it drains, and no client notices.
//!
//! Needs root (network namespaces); CI runs as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::xmpp::{check_inspected_chat, clients_in};
use common::{
    Killed, LogsOnFailure, in_netns, prosody_in, stop_and_read, wait_for_line, wait_for_port_in,
};
use serde_json::Value;

const CUSTOMER_IP: &str = "10.201.1.2";
const CLOUD_IP: &str = "10.201.1.1";
const CLOUD_INNER_IP: &str = "10.201.2.1";
const SERVER_IP: &str = "10.201.2.2";

/// The three hosts; deleted when the test ends.
struct Hosts {
    customer: String,
    cloud: String,
    server: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {args:?}: {} (the test needs root and iproute2; scripts/test installs iproute2)",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Hosts {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let hosts = Self {
            customer: format!("imgt{tag}-customer"),
            cloud: format!("imgt{tag}-cloud"),
            server: format!("imgt{tag}-server"),
        };
        for ns in [&hosts.customer, &hosts.cloud, &hosts.server] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts.link(&hosts.customer, CUSTOMER_IP, &hosts.cloud, CLOUD_IP);
        hosts.link(&hosts.cloud, CLOUD_INNER_IP, &hosts.server, SERVER_IP);
        hosts
    }

    /// A veth pair between `a` and `b` on a /24 of their own.
    fn link(&self, a: &str, a_ip: &str, b: &str, b_ip: &str) {
        ip(&[
            "link", "add", "veth-a", "netns", a, "type", "veth", "peer", "name", "veth-b", "netns",
            b,
        ]);
        // The pair's names are reused in each namespace: rename them after the far end.
        let (a_name, b_name) = (format!("to-{}", short(b)), format!("to-{}", short(a)));
        ip(&["-n", a, "link", "set", "veth-a", "name", &a_name]);
        ip(&["-n", b, "link", "set", "veth-b", "name", &b_name]);
        ip(&[
            "-n",
            a,
            "addr",
            "add",
            &format!("{a_ip}/24"),
            "dev",
            &a_name,
        ]);
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("{b_ip}/24"),
            "dev",
            &b_name,
        ]);
        ip(&["-n", a, "link", "set", &a_name, "up"]);
        ip(&["-n", b, "link", "set", &b_name, "up"]);
    }
}

fn short(ns: &str) -> &str {
    ns.rsplit('-').next().unwrap_or(ns)
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.customer, &self.cloud, &self.server] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

fn imgate_in(netns: &str) -> Command {
    let mut command = in_netns(Some(netns), env!("CARGO_BIN_EXE_imgate"));
    command.stdout(Stdio::null());
    command
}

/// A dataplane in the cloud: tunnel on `CLOUD_IP:tunnel_port`, data in `data`, the
/// tenant's tunnel folder `state`, trusting the server's certificate, logging to `log`.
fn dataplane(
    hosts: &Hosts,
    (data, log): (&Path, &Path),
    state: &Path,
    tunnel_port: u16,
    cert: &Path,
) -> Killed {
    let forward = common::free_port();
    let log = std::fs::File::create(log).expect("log");
    let child = imgate_in(&hosts.cloud)
        .args(["up", "--socks", "off", "--http", "off", "--metrics", "off"])
        .args(["--seal-seconds", "1", "--drain-seconds", "5"])
        // The IM server's host is on a private network, which sessions may reach only when
        // allowed.
        .args(["--allow-destination", "10.201.2.0/24", "--forward"])
        .arg(format!("127.0.0.1:{forward}=127.0.0.1:9"))
        .arg("--data")
        .arg(data)
        .arg("--tunnel-state")
        .arg(state)
        .args(["--tunnel", &format!("{CLOUD_IP}:{tunnel_port}")])
        .arg("--extra-roots")
        .arg(cert)
        .stderr(log)
        .spawn()
        .expect("imgate up runs");
    let dataplane = Killed(child);
    wait_for_port_in(&hosts.cloud, "127.0.0.1", forward, "imgate up");
    dataplane
}

/// Unix time now, in seconds.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Steady probes through the connector's forward for `seconds`, in the background.
fn probes(hosts: &Hosts, port: u16, seconds: u32) -> std::process::Child {
    in_netns(Some(&hosts.customer), "python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tunnel_probe.py"
        ))
        .args(["127.0.0.1", &port.to_string(), &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs")
}

fn probe_results(child: std::process::Child) -> Vec<Value> {
    let output = child.wait_with_output().expect("probes end");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a probe line"))
        .collect()
}

fn outbound<'a>(records: &'a [Value], text: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["type"] == "message" && r["dir"] == "outbound" && r["text"] == text)
        .collect()
}

#[test]
fn chat_crosses_hosts_through_the_tunnel_and_survives_a_dataplane_lost_and_one_drained() {
    let hosts = Hosts::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, server_port, _, cert) = prosody_in(dir.path(), Some(&hosts.server), SERVER_IP);
    let state = dir.path().join("tenant-tunnel");
    let (data_1, data_2): (PathBuf, PathBuf) = (dir.path().join("dp1"), dir.path().join("dp2"));
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let (log_1, log_2, log_1_again) = (log("dp1"), log("dp2"), log("dp1-restarted"));
    let connector_log = log("connector");
    let _logs = LogsOnFailure(vec![
        connector_log.clone(),
        log_1.clone(),
        log_2.clone(),
        log_1_again.clone(),
    ]);
    let dp1 = dataplane(&hosts, (&data_1, &log_1), &state, 4433, &cert);
    // Dataplanes of one tenant share its interception CA, as the operator's Secret makes them.
    std::fs::create_dir_all(data_2.join("ca")).expect("ca");
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(data_1.join("ca").join(file), data_2.join("ca").join(file)).expect("copy");
    }
    let dp2 = dataplane(&hosts, (&data_2, &log_2), &state, 4434, &cert);
    let dataplanes = [format!("{CLOUD_IP}:4433"), format!("{CLOUD_IP}:4434")];

    // The customer enrolls its connector with a token and runs it.
    let token = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["tunnel", "token", "--connector", "site-a", "--state"])
        .arg(&state)
        .output()
        .expect("imgate tunnel token");
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let identity = dir.path().join("site-a");
    let enrolled = imgate_in(&hosts.customer)
        .args(["connector", "enroll", "--token", &token, "--identity"])
        .arg(&identity)
        .args(["--dataplane", &dataplanes[0]])
        .output()
        .expect("imgate connector enroll");
    assert!(enrolled.status.success(), "{enrolled:?}");
    let forward = 5222;
    let _connector = Killed(
        imgate_in(&hosts.customer)
            .args(["connector", "run", "--socks", "off", "--identity"])
            .arg(&identity)
            .args(["--dataplane", &dataplanes[0], "--dataplane", &dataplanes[1]])
            .args([
                "--forward",
                &format!("127.0.0.1:{forward}={SERVER_IP}:{server_port}"),
            ])
            .stderr(std::fs::File::create(&connector_log).expect("log"))
            .spawn()
            .expect("imgate connector run"),
    );
    wait_for_port_in(&hosts.customer, "127.0.0.1", forward, "imgate connector");
    for dataplane in &dataplanes {
        wait_for_line(&connector_log, &["connected to the dataplane", dataplane]);
    }

    // Chat crosses the hosts, inspected.
    let ca = data_1.join("ca/ca.pem");
    let first = clients_in(Some(&hosts.customer), forward, &ca, &["chat"]);

    // One dataplane is killed under steady traffic.
    let traffic = probes(&hosts, forward, 14);
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = now();
    drop(dp1);
    let results = probe_results(traffic);
    // Probes that ended before the kill; one in flight when it came may fail.
    let before: Vec<&Value> = results
        .iter()
        .filter(|r| {
            r["t"]
                .as_f64()
                .zip(r["took"].as_f64())
                .map(|(t, took)| t + took)
                < Some(killed_at)
        })
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|r| r["ok"] == true),
        "traffic flows before the kill: {before:?}"
    );
    let settled: Vec<&Value> = results
        .iter()
        .filter(|r| r["t"].as_f64() >= Some(killed_at + 5.0))
        .collect();
    assert!(
        settled.len() >= 20 && settled.iter().all(|r| r["ok"] == true),
        "5 s after the kill every new connection is carried by the other dataplane: {results:?}"
    );
    let worst = results
        .iter()
        .filter(|r| r["t"].as_f64() >= Some(killed_at))
        .filter_map(|r| r["took"].as_f64())
        .fold(0.0, f64::max);
    println!(
        "{} probes after the kill; the slowest took {worst:.2} s",
        results.len() - before.len()
    );

    // Clients that reconnect carry on.
    let second = clients_in(Some(&hosts.customer), forward, &ca, &["chat"]);

    // The killed dataplane comes back, recovering its log; the connector uses it again.
    let dp1 = dataplane(&hosts, (&data_1, &log_1_again), &state, 4433, &cert);
    wait_for_line(&log_1_again, &["connector connected", "site-a"]);

    // The other one is stopped with SIGTERM under traffic: it drains, and no client notices.
    let traffic = probes(&hosts, forward, 8);
    std::thread::sleep(Duration::from_secs(2));
    let records_2 = stop_and_read(dp2, &data_2);
    let results = probe_results(traffic);
    assert!(
        results.len() >= 20 && results.iter().all(|r| r["ok"] == true),
        "a draining dataplane's new streams go to the other, unnoticed: {results:?}"
    );
    wait_for_line(&log_2, &["draining"]);
    let records_1 = stop_and_read(dp1, &data_1);

    // Nothing archived was lost: both conversations are in the tenant's archive, whole.
    let records: Vec<Value> = records_1.into_iter().chain(records_2).collect();
    check_inspected_chat(&first, &records);
    check_inspected_chat(&second, &records);
    for text in ["hello bob", "card 4111 1111 1111 1111 please", "bye"] {
        assert_eq!(
            outbound(&records, text).len(),
            2,
            "{text:?} once from each conversation"
        );
    }
    let starts: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "session_start" && r["protocol"] == "xmpp")
        .collect();
    assert!(
        starts.iter().all(|r| r["connector"] == "site-a"
            && r["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:"))),
        "every session came through the connector: {starts:?}"
    );
    assert!(
        starts
            .iter()
            .all(|r| r["server"] == format!("{SERVER_IP}:{server_port}")),
        "{starts:?}"
    );
}
