//! Chaos under steady traffic: `imgate up` between real clients (slixmpp, raw IRC) and real
//! servers (Prosody, ngIRCd), archiving to a real S3 API server (moto) in
//! `onArchiveFailure: pass` mode, is killed with SIGKILL, has its store stalled, its disk
//! filled and its file descriptors exhausted, in turn. Afterwards every message bob received
//! is in the archive or counted in a recorded gap, `imgate archive verify` finds the archive
//! intact and names the gap, and after each fault but the kill the same process serves new
//! sessions again (after the kill, a restart on the same data folder, which ends the sessions
//! the kill cut as a crash).
//!
//! The data folder is a 16 MiB tmpfs mounted for the test (root is needed, as for the rest of
//! the suite), small enough to fill and too small for the log's preallocation, so that a full
//! disk reaches the log's appends.

mod common;
#[path = "../dataplane/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Killed, LogsOnFailure, free_port, http_get, ngircd, prosody, run, scrape, serve_logged,
    stop_and_read_s3, wait_for_line,
};
use serde_json::Value;

/// A tmpfs of `size` at `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path));
        Self(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Where the parts listen, and what `imgate up` needs to reach them.
struct Lab {
    dir: PathBuf,
    data: PathBuf,
    prosody: u16,
    prosody_cert: PathBuf,
    ngircd: u16,
    store: String,
    runs: usize,
}

/// One `imgate up`: the process and its ports.
struct Imgate {
    process: Killed,
    xmpp: u16,
    irc: u16,
    metrics: u16,
}

impl Lab {
    /// Starts `imgate up` on the data folder, logging to `imgate-N.log` beside it.
    fn up(&mut self) -> (Imgate, PathBuf) {
        self.runs += 1;
        let (xmpp, irc, metrics) = (free_port(), free_port(), free_port());
        let log = self.dir.join(format!("imgate-{}.log", self.runs));
        let mut command = Command::new(env!("CARGO_BIN_EXE_imgate"));
        command
            .args(["up", "--socks", "off", "--http", "off"])
            .arg("--forward")
            .arg(format!("127.0.0.1:{xmpp}=127.0.0.1:{}", self.prosody))
            .arg("--forward")
            .arg(format!("127.0.0.1:{irc}=127.0.0.1:{}", self.ngircd))
            .arg("--data")
            .arg(&self.data)
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .args(["--seal-seconds", "1", "--allow-destination", "127.0.0.0/8"])
            .arg("--extra-roots")
            .arg(&self.prosody_cert)
            .args(["--on-archive-failure", "pass"])
            .args(["--s3-bucket", "archive", "--s3-endpoint", &self.store])
            .args(["--store-timeout", "2s"])
            // The last stop ships everything, however slow a loaded machine makes the store.
            .args(["--flush-seconds", "100"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("RUST_LOG", "info");
        let process = serve_logged(&mut command, irc, "imgate up", &log);
        common::wait_for_port(xmpp, "imgate up's XMPP forward");
        (
            Imgate {
                process,
                xmpp,
                irc,
                metrics,
            },
            log,
        )
    }
}

impl Imgate {
    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Whether `/healthz` answers 200.
    fn healthy(&self) -> bool {
        http_get(self.metrics, "/healthz").starts_with("HTTP/1.1 200")
    }

    /// Whether `/readyz` answers 200.
    fn ready(&self) -> bool {
        http_get(self.metrics, "/readyz").starts_with("HTTP/1.1 200")
    }

    /// The value of gauge `name` on `/metrics`.
    fn gauge(&self, name: &str) -> Option<f64> {
        scrape(self.metrics)
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// Waits until `done` holds. Each condition follows from a fault injected or lifted a moment
/// before while traffic flows; the bound only stops a test that would otherwise hang.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(300), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tests/chaos_traffic.py`: alice sending bob numbered messages in XMPP and IRC.
struct Traffic {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Traffic {
    /// Starts the traffic labelled `label` through `imgate` and returns once messages flow
    /// (bob has received one of each protocol).
    fn start(imgate: &Imgate, ca: &Path, label: &str) -> Self {
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/chaos_traffic.py"
            ))
            .arg(imgate.xmpp.to_string())
            .arg(ca)
            .arg(imgate.irc.to_string())
            .arg(label)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut traffic = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(traffic.line(), "ready", "the clients logged in");
        assert_eq!(traffic.line(), "flowing", "bob receives");
        traffic
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line.trim_end().to_owned()
    }

    /// Stops sending and returns what bob received: the texts of both protocols.
    fn stop(mut self) -> Vec<String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let report: Value = serde_json::from_str(&self.line()).expect("the traffic's JSON");
        assert!(self.child.wait().expect("wait").success());
        ["xmpp", "irc"]
            .iter()
            .flat_map(|protocol| {
                report["got"][protocol]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|text| text.as_str().map(str::to_owned))
            .collect()
    }
}

/// Opens `count` silent connections to `port`: the process takes them while it has
/// descriptors (two each, with the upstream), and the rest wait in its backlog.
fn hog(port: u16, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect()
}

/// `prlimit` on `pid`'s open-file limit: `(soft, hard)`.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open-file limit");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn set_nofile(pid: u32, soft: u64, hard: u64) {
    run(Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}")));
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count() as u64
}

#[test]
fn kill_stall_full_disk_and_descriptor_exhaustion_lose_nothing_unrecorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, prosody_port, prosody_cert) = prosody(dir.path());
    let (_ngircd, ngircd_port) = ngircd(dir.path());
    let moto = support::Moto::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let relay = runtime.block_on(async {
        common::s3_bucket(&moto.endpoint(), "archive", false).await;
        support::Relay::start(moto.port).await
    });
    // Not `data`: Prosody keeps its accounts there.
    let data = dir.path().join("imgate");
    let _tmpfs = Tmpfs::mount(&data, "16m");
    let mut lab = Lab {
        dir: dir.path().to_owned(),
        data: data.clone(),
        prosody: prosody_port,
        prosody_cert,
        ngircd: ngircd_port,
        store: relay.endpoint(),
        runs: 0,
    };
    let ca = data.join("ca/ca.pem");
    let mut delivered: Vec<(String, Vec<String>)> = Vec::new();

    // 1. SIGKILL mid-traffic, and a restart on the same data folder.
    let (mut imgate, log) = lab.up();
    let mut logs = LogsOnFailure(vec![log]);
    let traffic = Traffic::start(&imgate, &ca, "kill");
    imgate.process.0.kill().expect("SIGKILL");
    imgate.process.0.wait().expect("killed");
    delivered.push(("kill".into(), traffic.stop()));
    let (imgate, log) = lab.up();
    logs.0.push(log.clone());

    // 2. A store that takes requests and never answers, then answers again.
    let traffic = Traffic::start(&imgate, &ca, "stall");
    relay.set_stalled(true);
    wait_until("shipping is reported failing", || {
        imgate.gauge("imgate_archive_shipping_failing") == Some(1.0)
    });
    relay.set_stalled(false);
    wait_until("shipping works again", || {
        imgate.gauge("imgate_archive_shipping_failing") == Some(0.0)
    });
    delivered.push(("stall".into(), traffic.stop()));

    // 3. A full disk: the log refuses records (forwarded unrecorded, counted), the pod is not
    //    ready (but alive: a restart would not help); then space again, and the log writes
    //    again by itself.
    let traffic = Traffic::start(&imgate, &ca, "disk");
    let filler = data.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let filled = file.write_all(&vec![0u8; 32 << 20]);
    assert!(filled.is_err(), "the 16 MiB disk is full");
    drop(file);
    wait_until(
        "the log cannot write, and the readiness check says so",
        || !imgate.ready() && imgate.gauge("imgate_archive_log_failing") == Some(1.0),
    );
    assert!(imgate.healthy(), "alive: the log tries again by itself");
    std::fs::remove_file(&filler).expect("space again");
    wait_until("the log writes again", || {
        imgate.ready() && imgate.gauge("imgate_archive_log_failing") == Some(0.0)
    });
    delivered.push(("disk".into(), traffic.stop()));

    // 4. No file descriptors left; then some free again.
    let traffic = Traffic::start(&imgate, &ca, "fd");
    let pid = imgate.pid();
    let (soft, hard) = nofile(pid);
    set_nofile(pid, open_descriptors(pid) + 8, hard);
    let hogs = hog(imgate.irc, 64);
    wait_for_line(&log, &["accept failed"]);
    drop(hogs);
    set_nofile(pid, soft, hard);
    delivered.push(("fd".into(), traffic.stop()));

    // The same process serves new sessions.
    assert!(imgate.healthy() && imgate.ready());
    let traffic = Traffic::start(&imgate, &ca, "end");
    delivered.push(("end".into(), traffic.stop()));

    let records = stop_and_read_s3(imgate.process, &moto.endpoint(), "archive");
    let archived: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["type"] == "message")
        .filter_map(|r| r["text"].as_str())
        .collect();
    let gaps: Vec<&Value> = records.iter().filter(|r| r["type"] == "gap").collect();
    assert!(
        records.iter().any(|r| r["type"] == "session_end"
            && r["reason"]
                .as_str()
                .is_some_and(|why| why.starts_with("crash:"))),
        "the sessions SIGKILL cut are ended, as a crash, by the next start"
    );
    let forwarded: u64 = gaps
        .iter()
        .filter(|g| g["on_failure"] == "pass")
        .filter_map(|g| g["refused"].as_u64())
        .sum();
    assert!(!gaps.is_empty(), "the full disk is a recorded gap");
    for (phase, texts) in &delivered {
        assert!(
            texts.iter().any(|t| t.contains(" xmpp ")) && texts.iter().any(|t| t.contains(" irc ")),
            "{phase}: bob received messages of both protocols: {texts:?}"
        );
        let missing: Vec<&String> = texts
            .iter()
            .filter(|text| !archived.contains(text.as_str()))
            .collect();
        eprintln!(
            "{phase}: {} message(s) delivered, {} of them not archived",
            texts.len(),
            missing.len()
        );
        if *phase == "disk" {
            assert!(
                missing.len() as u64 <= forwarded,
                "{phase}: {} delivered messages are not archived, more than the records the gaps say were refused and their events passed ({forwarded}): {missing:?}",
                missing.len()
            );
        } else {
            assert!(
                missing.is_empty(),
                "{phase}: delivered but not archived: {missing:?}"
            );
        }
    }

    let verify = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["archive", "--tenant", "local", "--s3-bucket", "archive"])
        .args(["--s3-endpoint", &moto.endpoint(), "verify"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("imgate archive verify runs");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains("intact: 1 writer(s)"), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("GAP ")).count(),
        gaps.len(),
        "{report}"
    );
    assert!(report.contains("No space left on device"), "{report}");
}
