//! Alerts from `imgate up` to real receivers: Prometheus Alertmanager (checked through its
//! own API and its own notifications), a webhook receiver that checks the signature, rsyslog
//! taking RFC 5424 over TLS, and an SMTP server (aiosmtpd) requiring STARTTLS. IRC traffic
//! through a real server (ngIRCd) matches the rules. While every receiver is down, and the
//! webhook hangs, answers garbage and then errors, the dataplane is killed; once everything
//! is back, every alert has arrived at every receiver that takes its severity, firing and
//! resolved, none twice, its count matching the rule matches in the archive.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Killed, LogsOnFailure, free_port, http_get, imgate_output, imgate_up, ngircd, scrape, serve,
    serve_logged, stop_and_read,
};
use serde_json::Value;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/alerts/policy.yaml"
);
/// Alertmanager's starts, each logged to a file of its own.
static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const WEBHOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alert_webhook.py");

/// Polls `ready` until it gives a value, for at most three minutes.
fn wait_until<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    wait_showing(what, || ready().ok_or_else(String::new))
}

/// Polls `ready` until it gives a value, for at most three minutes; a failure shows what it
/// last said instead.
fn wait_showing<T>(what: &str, mut ready: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let last = match ready() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within 3 minutes\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `tests/alert_webhook.py` on `port`: checking signatures under the key in `secret` (none
/// when it is `-`), keeping what it takes in `out`, answering as `mode` says.
fn webhook_receiver(port: u16, secret: &Path, out: &Path, mode: &Path) -> Killed {
    serve(
        Command::new("python3").args([
            WEBHOOK,
            &port.to_string(),
            &secret.to_string_lossy(),
            &out.to_string_lossy(),
            &mode.to_string_lossy(),
        ]),
        port,
        "the webhook receiver (tests/alert_webhook.py)",
    )
}

/// A CA, and a certificate for `localhost` it signed: (ca.pem, cert.pem, key.pem).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Receivers' CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    let cert = params
        .signed_by(&key, &Issuer::new(ca_params, ca_key))
        .expect("certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("ca");
    std::fs::write(&paths.1, cert.pem()).expect("cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("key");
    paths
}

/// The receivers, each on its own port, restartable on it.
struct Receivers {
    dir: PathBuf,
    pki: (PathBuf, PathBuf, PathBuf),
    alertmanager: u16,
    sink: u16,
    webhook: u16,
    syslog: u16,
    smtp: u16,
}

impl Receivers {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            pki: pki(dir),
            alertmanager: free_port(),
            sink: free_port(),
            webhook: free_port(),
            syslog: free_port(),
            smtp: free_port(),
        }
    }

    /// Alertmanager, grouping by rule and sender and notifying `sink` (resolutions too).
    fn start_alertmanager(&self) -> Killed {
        let config = self.dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: sink\n  group_by: [rule, sender]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 4h\nreceivers:\n- name: sink\n  webhook_configs:\n  - url: http://127.0.0.1:{}/\n    send_resolved: true\n",
                self.sink
            ),
        )
        .expect("config");
        let storage = self.dir.join("alertmanager-data");
        std::fs::create_dir_all(&storage).expect("storage");
        serve_logged(
            Command::new("prometheus-alertmanager").args([
                format!("--config.file={}", config.display()),
                format!("--storage.path={}", storage.display()),
                format!("--web.listen-address=127.0.0.1:{}", self.alertmanager),
                "--cluster.listen-address=".into(),
                "--log.level=debug".into(),
            ]),
            self.alertmanager,
            "Alertmanager (scripts/test installs it: apt-get install prometheus-alertmanager)",
            &self.dir.join(format!(
                "alertmanager-{}.log",
                STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )),
        )
    }

    /// A receiver of Alertmanager's own notifications.
    fn start_sink(&self) -> Killed {
        webhook_receiver(
            self.sink,
            Path::new("-"),
            &self.dir.join("sink.jsonl"),
            &self.dir.join("sink.mode"),
        )
    }

    fn webhook_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("webhook.mode"), mode).expect("mode");
    }

    fn start_webhook(&self, secret: &Path) -> Killed {
        webhook_receiver(
            self.webhook,
            secret,
            &self.dir.join("webhook.jsonl"),
            &self.dir.join("webhook.mode"),
        )
    }

    /// rsyslog taking RFC 5424 over TLS (RFC 5425), each message's raw text kept a line.
    fn start_rsyslog(&self) -> Killed {
        let work = self.dir.join("rsyslog");
        std::fs::create_dir_all(&work).expect("work");
        let config = self.dir.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                r#"global(workDirectory="{work}" defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
input(type="imtcp" address="127.0.0.1" port="{port}" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
action(type="omfile" file="{work}/messages.log" template="raw")
"#,
                work = work.display(),
                ca = self.pki.0.display(),
                cert = self.pki.1.display(),
                key = self.pki.2.display(),
                port = self.syslog
            ),
        )
        .expect("config");
        serve_logged(
            Command::new("rsyslogd").args([
                "-n",
                "-f",
                &config.to_string_lossy(),
                "-i",
                &self.dir.join("rsyslog.pid").to_string_lossy(),
            ]),
            self.syslog,
            "rsyslog (scripts/test installs it: apt-get install rsyslog rsyslog-gnutls)",
            &self.dir.join("rsyslog.log"),
        )
    }

    fn syslog_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("rsyslog/messages.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// aiosmtpd requiring STARTTLS, keeping mail in a Maildir.
    fn start_smtp(&self) -> Killed {
        serve_logged(
            Command::new("python3").args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.smtp),
                "--tlscert",
                &self.pki.1.to_string_lossy(),
                "--tlskey",
                &self.pki.2.to_string_lossy(),
                "-c",
                "aiosmtpd.handlers.Mailbox",
                &self.dir.join("maildir").to_string_lossy(),
            ]),
            self.smtp,
            "aiosmtpd (scripts/test installs it: pip install aiosmtpd)",
            &self.dir.join("smtp.log"),
        )
    }

    /// Each mail's text.
    fn mails(&self) -> Vec<String> {
        let new = self.dir.join("maildir/new");
        let mut mails: Vec<String> = std::fs::read_dir(&new)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
            .collect();
        mails.sort();
        mails
    }
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// An IRC client speaking the protocol by hand.
struct Irc {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    pings: u32,
}

impl Irc {
    fn connect(port: u16, nick: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let mut irc = Self {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
            pings: 0,
        };
        irc.send(&format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}"));
        irc.read_until(" 001 ");
        irc
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
    }

    fn read_until(&mut self, needle: &str) -> String {
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read");
            assert!(read > 0, "the connection closed before {needle:?}");
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {}", token.trim_end()));
            }
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn join(&mut self, channel: &str) {
        self.send(&format!("JOIN {channel}"));
        self.read_until(" 366 ");
    }

    fn say(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}"));
    }

    /// Waits until everything sent before has been through imgate (and so archived).
    fn sync(&mut self) {
        self.pings += 1;
        let token = format!("sync-{}", self.pings);
        self.send(&format!("PING :{token}"));
        self.read_until(&token);
    }
}

/// Rule matches in the archive, by (rule, sender handle).
fn matches_in(records: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut hits = BTreeMap::new();
    for record in records.iter().filter(|r| r["type"] == "message") {
        let sender = record["from"]["handle"].as_str().unwrap_or_default();
        for rule in record["verdict"]["rules"].as_array().into_iter().flatten() {
            *hits
                .entry((
                    rule.as_str().unwrap_or_default().to_owned(),
                    sender.to_owned(),
                ))
                .or_default() += 1;
        }
    }
    hits
}

/// Checks one receiver's notices (alert id, status, rule, sender, count): none twice, each
/// alert firing and resolved, and the resolved counts add up to `expected` matches.
fn check_receiver(
    name: &str,
    notices: &[(String, String, String, String, u64)],
    expected: &BTreeMap<(String, String), u64>,
) {
    let mut seen = BTreeSet::new();
    for (id, status, ..) in notices {
        assert!(
            seen.insert((id.clone(), status.clone())),
            "{name} got {id} {status} twice: {notices:#?}"
        );
    }
    let ids = |wanted: &str| -> BTreeSet<&String> {
        notices
            .iter()
            .filter(|n| n.1 == wanted)
            .map(|n| &n.0)
            .collect()
    };
    assert_eq!(
        ids("firing"),
        ids("resolved"),
        "{name}: every alert fired and resolved: {notices:#?}"
    );
    let mut counted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (_, status, rule, sender, count) in notices {
        if status == "resolved" {
            *counted.entry((rule.clone(), sender.clone())).or_default() += count;
        }
    }
    assert_eq!(&counted, expected, "{name}: counts against the archive");
}

#[test]
fn every_alert_reaches_every_receiver_once_through_outages_and_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers::new(dir.path());
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![
        data.with_extension("log"),
        dir.path().join("alertmanager-0.log"),
        dir.path().join("alertmanager-1.log"),
        dir.path().join("rsyslog.log"),
        dir.path().join("smtp.log"),
    ]);
    let secrets = dir.path().join("secrets");
    for (secret, key, contents) in [
        ("hook-key", "secret", b"a shared secret".to_vec()),
        (
            "receivers-ca",
            "ca.crt",
            std::fs::read(&receivers.pki.0).expect("ca"),
        ),
    ] {
        std::fs::create_dir_all(secrets.join(secret)).expect("secret");
        std::fs::write(secrets.join(secret).join(key), contents).expect("key");
    }
    let alerts = dir.path().join("alerts.yaml");
    std::fs::write(
        &alerts,
        format!(
            "groupWindow: 15s\nreceivers:\n- name: am\n  allowPrivateNetwork: true\n  alertmanager: {{url: 'http://127.0.0.1:{am}'}}\n- name: hook\n  allowPrivateNetwork: true\n  includeText: true\n  webhook: {{url: 'http://127.0.0.1:{hook}/alerts', secretRef: {{name: hook-key}}}}\n- name: siem\n  allowPrivateNetwork: true\n  syslog: {{address: 'localhost:{syslog}', caSecretRef: {{name: receivers-ca}}}}\n- name: mail\n  minSeverity: high\n  allowPrivateNetwork: true\n  email: {{smtp: 'localhost:{smtp}', from: imgate@acme.example, to: [compliance@acme.example], caSecretRef: {{name: receivers-ca}}}}\n",
            am = receivers.alertmanager,
            hook = receivers.webhook,
            syslog = receivers.syslog,
            smtp = receivers.smtp,
        ),
    )
    .expect("alerts");

    let (_irc_server, irc_port) = ngircd(dir.path());
    let _sink = receivers.start_sink();
    let alertmanager = receivers.start_alertmanager();
    let webhook = receivers.start_webhook(&secrets.join("hook-key/secret"));
    let rsyslog = receivers.start_rsyslog();
    let smtp = receivers.start_smtp();
    let metrics_port = free_port();
    let up_args = [
        "--policy",
        POLICY,
        "--alerts",
        alerts.to_str().expect("utf-8"),
        "--alert-retry-max",
        "1s",
        "--alert-down-after",
        "1s",
        "--metrics",
        &format!("127.0.0.1:{metrics_port}"),
    ];
    let (imgate, front) = imgate_up(irc_port, &data, &up_args);

    // Everything up: alice promises returns three times and sends a card number.
    let mut alice = Irc::connect(front, "alice");
    alice.join("#desk");
    for i in 0..3 {
        alice.say(
            "#desk",
            &format!("a guaranteed return of {} percent", 10 + i),
        );
    }
    alice.say("#desk", "my card is 4111 1111 1111 1111");
    alice.sync();
    let webhook_file = dir.path().join("webhook.jsonl");
    wait_until("alice's alerts fire at the webhook", || {
        (jsonl(&webhook_file).len() >= 2).then_some(())
    });
    let firing = jsonl(&webhook_file);
    let promissory = firing
        .iter()
        .find(|a| a["rule"] == "supervision/promissory")
        .unwrap_or_else(|| panic!("{firing:#?}"));
    assert_eq!(promissory["status"], "firing");
    assert_eq!(promissory["severity"], "high");
    assert!(
        promissory["text"]
            .as_str()
            .is_some_and(|t| t.contains("guaranteed return")),
        "the webhook asked for text: {promissory}"
    );
    assert!(promissory["conversation"].is_string() && promissory["record"].is_string());
    // Alertmanager has it, grouped by rule and sender, with the hits so far as its count.
    let group = wait_until("Alertmanager groups alice's promissory alert", || {
        let response = http_get(receivers.alertmanager, "/api/v2/alerts/groups");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let groups: Value = serde_json::from_str(body.trim()).ok()?;
        groups
            .as_array()?
            .iter()
            .find_map(|g| (g["labels"]["rule"] == "supervision/promissory").then(|| g.clone()))
    });
    assert_eq!(group["labels"]["sender"], promissory["sender"]["handle"]);
    assert_eq!(group["alerts"].as_array().map(Vec::len), Some(1), "{group}");
    // Alertmanager notifies of it firing (its own receivers hear only of what they saw fire).
    wait_until("Alertmanager notifies of alice's alert", || {
        jsonl(&dir.path().join("sink.jsonl"))
            .iter()
            .any(|a| a["status"] == "firing" && a["labels"]["rule"] == "supervision/promissory")
            .then_some(())
    });
    wait_until("the SIEM and the mailbox get alice's alerts", || {
        let syslog = receivers.syslog_lines();
        (syslog.len() >= 2 && !receivers.mails().is_empty()).then_some(())
    });
    assert!(
        receivers
            .syslog_lines()
            .iter()
            .all(|line| !line.contains("guaranteed return")),
        "no text reaches the SIEM unless asked for"
    );
    // Alice's alerts resolve everywhere before the receivers go (one taken and not yet
    // acknowledged when a receiver is killed would rightly be sent again).
    wait_showing("alice's alerts resolve at every receiver", || {
        let resolved = |lines: Vec<String>| {
            lines
                .iter()
                .filter(|l| l.contains("status=\"resolved\""))
                .count()
        };
        let hook = jsonl(&webhook_file)
            .iter()
            .filter(|a| a["status"] == "resolved")
            .count();
        let syslog = resolved(receivers.syslog_lines());
        let sink = jsonl(&dir.path().join("sink.jsonl"))
            .iter()
            .filter(|a| a["status"] == "resolved")
            .count();
        let mails = receivers.mails().len();
        if hook >= 2 && syslog >= 2 && sink >= 2 && mails >= 2 {
            Ok(())
        } else {
            Err(format!(
                "resolved: webhook {hook}, syslog {syslog}, Alertmanager {sink}; {mails} mails"
            ))
        }
    });

    // Everything down: the webhook hangs, then answers garbage, then errors; the others stop.
    // Alertmanager stops as it should (keeping what it notified of); the others are killed.
    common::stop(alertmanager);
    drop((rsyslog, smtp));
    receivers.webhook_mode("hang");
    let mut bob = Irc::connect(front, "bob");
    bob.join("#desk");
    bob.say("#desk", "project falcon closes friday");
    bob.say("#desk", "is project falcon on?");
    bob.say("#desk", "a guaranteed return, trust me");
    bob.sync();
    // Killed at once, most often before the outbox has taken a snapshot of what bob said,
    // which is then read again from the log.
    let mut imgate = imgate;
    imgate.0.kill().expect("kill");
    let _ = imgate.0.wait();
    drop(imgate);
    drop((alice, bob));
    let (imgate, _) = imgate_up(irc_port, &data, &up_args);
    let failures = |reason: &str| -> u64 {
        let metrics = scrape(metrics_port);
        let wanted = format!(
            "imgate_alert_delivery_failures_total{{receiver=\"hook\",reason=\"{reason}\"}} "
        );
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0)
    };
    let more = |reason: &str| {
        let before = failures(reason);
        wait_showing(&format!("a new {reason} failure at the webhook"), || {
            if failures(reason) > before {
                return Ok(());
            }
            let metrics = scrape(metrics_port);
            Err(metrics
                .lines()
                .filter(|l| l.contains("failures"))
                .collect::<Vec<_>>()
                .join("\n"))
        });
    };
    more("timeout");
    receivers.webhook_mode("garbage");
    more("connect");
    receivers.webhook_mode("500");
    more("status");
    wait_until("every receiver is seen failing", || {
        let metrics = scrape(metrics_port);
        ["am", "siem", "mail"]
            .iter()
            .all(|r| metrics.contains(&format!("imgate_alert_receiver_up{{receiver=\"{r}\"}} 0")))
            .then_some(())
    });
    // Killed again while alerts wait; started again, with the receivers back.
    let mut imgate = imgate;
    imgate.0.kill().expect("kill");
    let _ = imgate.0.wait();
    drop(imgate);
    let _alertmanager = receivers.start_alertmanager();
    let _rsyslog = receivers.start_rsyslog();
    let _smtp = receivers.start_smtp();
    receivers.webhook_mode("ok");
    let (imgate, _) = imgate_up(irc_port, &data, &up_args);

    // Every alert resolves at every receiver.
    let webhook_notices = || -> Vec<(String, String, String, String, u64)> {
        jsonl(&webhook_file)
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap_or_default().to_owned(),
                    a["status"].as_str().unwrap_or_default().to_owned(),
                    a["rule"].as_str().unwrap_or_default().to_owned(),
                    a["sender"]["handle"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["count"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    let all_resolved = || {
        let hook = webhook_notices();
        let with = |status: &str| -> BTreeSet<String> {
            hook.iter()
                .filter(|n| n.1 == status)
                .map(|n| n.0.clone())
                .collect()
        };
        let fired = with("firing");
        let syslog = receivers.syslog_lines();
        let in_syslog = |id: &String| {
            syslog
                .iter()
                .any(|l| l.contains(&format!(" id=\"{id}\"")) && l.contains("status=\"resolved\""))
        };
        let sink = jsonl(&dir.path().join("sink.jsonl"));
        let in_alertmanager = |id: &String| {
            sink.iter()
                .any(|a| a["status"] == "resolved" && a["labels"]["imgate_alert_id"] == id.as_str())
        };
        let high = hook
            .iter()
            .filter(|n| n.2 != "supervision/card-numbers")
            .count();
        let mails = receivers.mails().len();
        if fired.len() >= 4
            && fired == with("resolved")
            && fired.iter().all(|id| in_syslog(id) && in_alertmanager(id))
            && mails >= high
        {
            Ok(())
        } else {
            Err(format!(
                "webhook: {hook:#?}\nsyslog: {syslog:#?}\nAlertmanager's notifications: {sink:#?}\n{mails} mails"
            ))
        }
    };
    // Alice's promissory and card alerts, bob's deal-name and promissory ones (alice also
    // received bob's promissory message: an inbound match of its own, by bob).
    wait_showing("every alert resolves at every receiver", all_resolved);
    let metrics = scrape(metrics_port);
    let records = stop_and_read(imgate, &data);
    let expected = matches_in(&records);
    assert!(
        expected.contains_key(&("supervision/deal-names".into(), "bob@127.0.0.1".into())),
        "bob's blocked deal name is in the archive: {expected:?}"
    );

    check_receiver("webhook", &webhook_notices(), &expected);
    let syslog: Vec<(String, String, String, String, u64)> = receivers
        .syslog_lines()
        .iter()
        .map(|line| {
            let param = |name: &str| {
                let start = line
                    .find(&format!(" {name}=\""))
                    .map(|i| i + name.len() + 3)
                    .unwrap_or_else(|| panic!("{name} in {line}"));
                let end = start + line[start..].find('"').unwrap_or(0);
                line[start..end].to_owned()
            };
            (
                param("id"),
                param("status"),
                param("rule"),
                param("sender"),
                param("count").parse().unwrap_or_default(),
            )
        })
        .collect();
    check_receiver("syslog", &syslog, &expected);

    // The mailbox (which took mail only after STARTTLS) has high and critical alerts only:
    // one mail per notice, none twice.
    let mails = receivers.mails();
    let mut message_ids: Vec<String> = mails
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .map(str::to_owned)
        })
        .collect();
    message_ids.sort();
    let mut wanted: Vec<String> = webhook_notices()
        .iter()
        .filter(|n| n.2 != "supervision/card-numbers")
        .map(|(id, status, ..)| format!("<{id}.{status}@imgate.invalid>"))
        .collect();
    wanted.sort();
    assert!(wanted.len() >= 6, "{wanted:?}");
    assert_eq!(message_ids, wanted, "{mails:#?}");

    // Alertmanager notified its own receiver of each resolution, and lists none as active.
    let sink = jsonl(&dir.path().join("sink.jsonl"));
    let resolved_in_am: BTreeSet<&str> = sink
        .iter()
        .filter(|a| a["status"] == "resolved")
        .filter_map(|a| a["labels"]["imgate_alert_id"].as_str())
        .collect();
    let fired: BTreeSet<String> = webhook_notices().into_iter().map(|n| n.0).collect();
    for id in &fired {
        assert!(
            resolved_in_am.contains(id.as_str()),
            "Alertmanager resolved {id}: {sink:#?}"
        );
    }
    assert!(
        !dir.path().join("webhook.jsonl.rejected").exists(),
        "every request carried a good signature"
    );

    // The outage is on record, and on /metrics.
    let events: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "system")
        .filter_map(|r| r["event"].as_str())
        .collect();
    for event in ["alert-receiver-down", "alert-receiver-recovered"] {
        assert!(events.contains(&event), "{event}: {events:?}");
    }
    assert!(
        metrics.contains("imgate_alert_notices_sent_total{receiver=\"mail\",status=\"resolved\"}"),
        "{metrics}"
    );
    drop(webhook);
}

#[test]
fn a_receiver_outside_the_public_internet_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts = dir.path().join("alerts.yaml");
    std::fs::write(
        &alerts,
        "receivers:\n- name: am\n  alertmanager: {url: 'http://169.254.169.254:9093'}\n",
    )
    .expect("alerts");
    let (code, output) = imgate_output(
        &[
            "up",
            "--socks",
            "127.0.0.1:0",
            "--http",
            "off",
            "--metrics",
            "off",
            "--data",
            &dir.path().join("data").to_string_lossy(),
            "--alerts",
            &alerts.to_string_lossy(),
        ],
        &[],
    );
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("receivers[0].alertmanager.url")
            && output.contains("link-local")
            && output.contains("allowPrivateNetwork"),
        "{output}"
    );

    // A name resolving to loopback is refused when dialled.
    let (_irc_server, irc_port) = ngircd(dir.path());
    let webhook = free_port();
    std::fs::write(
        &alerts,
        format!("receivers:\n- name: hook\n  webhook: {{url: 'http://localhost:{webhook}/', secretRef: {{name: k}}}}\n"),
    )
    .expect("alerts");
    std::fs::create_dir_all(dir.path().join("secrets/k")).expect("secret");
    std::fs::write(dir.path().join("secrets/k/secret"), "s").expect("secret");
    let _receiver = webhook_receiver(
        webhook,
        &dir.path().join("secrets/k/secret"),
        &dir.path().join("got.jsonl"),
        &dir.path().join("mode"),
    );
    let metrics_port = free_port();
    let data = dir.path().join("data2");
    let (imgate, front) = imgate_up(
        irc_port,
        &data,
        &[
            "--policy",
            POLICY,
            "--alerts",
            alerts.to_str().expect("utf-8"),
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    );
    let mut alice = Irc::connect(front, "alice");
    alice.join("#desk");
    alice.say("#desk", "a guaranteed return");
    alice.sync();
    wait_until("the delivery is refused", || {
        scrape(metrics_port)
            .contains("imgate_alert_delivery_failures_total{receiver=\"hook\",reason=\"refused\"}")
            .then_some(())
    });
    drop(imgate);
    assert!(
        !dir.path().join("got.jsonl").exists(),
        "nothing reached the loopback receiver"
    );
}

#[test]
fn a_notice_refused_for_good_is_archived_and_holds_up_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _logs = LogsOnFailure(vec![data.with_extension("log")]);
    let (_irc_server, irc_port) = ngircd(dir.path());
    let webhook = free_port();
    // The receiver's key; imgate starts with another.
    std::fs::write(dir.path().join("receiver-key"), "s").expect("key");
    std::fs::create_dir_all(dir.path().join("secrets/k")).expect("secret");
    std::fs::write(dir.path().join("secrets/k/secret"), "not the key").expect("secret");
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "refuse:card-numbers").expect("mode");
    let got = dir.path().join("got.jsonl");
    let _receiver = webhook_receiver(webhook, &dir.path().join("receiver-key"), &got, &mode);
    let alerts = dir.path().join("alerts.yaml");
    std::fs::write(
        &alerts,
        format!("groupWindow: 2s\nreceivers:\n- name: hook\n  allowPrivateNetwork: true\n  webhook: {{url: 'http://127.0.0.1:{webhook}/', secretRef: {{name: k}}}}\n"),
    )
    .expect("alerts");
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let args = [
        "--policy",
        POLICY,
        "--alerts",
        alerts.to_str().expect("utf-8"),
        "--alert-retry-max",
        "1s",
        "--alert-down-after",
        "1s",
        "--metrics",
        &metrics,
    ];
    // A wrong key: every request is refused (401), which is the receiver's settings, not the
    // alerts: retried and reported, nothing given up.
    let (imgate, front) = imgate_up(irc_port, &data, &args);
    let mut alice = Irc::connect(front, "alice");
    alice.join("#desk");
    alice.say("#desk", "a guaranteed return, before the key is right");
    alice.sync();
    wait_until("the refusals are counted as failures", || {
        let text = scrape(metrics_port);
        let failures: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "imgate_alert_delivery_failures_total{receiver=\"hook\",reason=\"status\"} ",
                )
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        (failures > 4 && text.contains("imgate_alert_receiver_up{receiver=\"hook\"} 0"))
            .then_some(())
    });
    drop(alice);
    common::stop(imgate);
    std::fs::write(dir.path().join("secrets/k/secret"), "s\n").expect("secret");
    let (imgate, front) = imgate_up(irc_port, &data, &args);
    let mut alice = Irc::connect(front, "alice");
    alice.join("#desk");
    // One message, two rules: two alerts in one request, which the receiver refuses.
    alice.say("#desk", "a guaranteed return on card 4111 1111 1111 1111");
    alice.sync();
    wait_until("the promissory alert fires and resolves", || {
        let mut statuses: Vec<String> = jsonl(&got)
            .iter()
            .filter(|a| a["rule"] == "supervision/promissory")
            .map(|a| a["status"].as_str().unwrap_or_default().to_owned())
            .collect();
        statuses.sort();
        // The one from before the key was right, and the one after.
        (statuses == ["firing", "firing", "resolved", "resolved"]).then_some(())
    });
    let records = stop_and_read(imgate, &data);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "system" && r["event"] == "alert-receiver-down"),
        "the wrong key is on record"
    );
    assert!(
        jsonl(&got)
            .iter()
            .all(|a| a["rule"] != "supervision/card-numbers"),
        "the refused alert never reached it"
    );
    let rejected: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "system" && r["event"] == "alert-rejected")
        .filter_map(|r| r["detail"].as_str())
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "refused once, then never sent again: {rejected:?}"
    );
    assert!(
        rejected[0].contains("receiver hook refused alert") && rejected[0].contains("400"),
        "{rejected:?}"
    );
}
