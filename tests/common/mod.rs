//! Helpers shared by the end-to-end tests that run `imgate up` between real IM servers and
//! clients.

#![allow(dead_code)]

pub mod cluster;
pub mod tunnel;
pub mod xmpp;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Logs printed to standard error when the test fails while this is alive, so a failure
/// anywhere in a test of several processes shows what each of them said. Declare it after
/// the folder holding the logs, so it is dropped first.
pub struct LogsOnFailure(pub Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for path in &self.0 {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                eprintln!("--- {} ---\n{text}", path.display());
            }
        }
    }
}

/// Starts `command` with its output discarded and waits until it listens on `port`; `what`
/// names it, with how to install it, should it not start.
pub fn serve(command: &mut Command, port: u16, what: &str) -> Killed {
    serve_logging(command.stderr(Stdio::null()), port, what)
}

/// [`serve`], with its standard error written to `log`.
pub fn serve_logged(command: &mut Command, port: u16, what: &str, log: &Path) -> Killed {
    let file = std::fs::File::create(log).expect("log file");
    serve_logging(command.stderr(file), port, what)
}

fn serve_logging(command: &mut Command, port: u16, what: &str) -> Killed {
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{what} runs: {error}"));
    let server = Killed(child);
    wait_for_port(port, what);
    server
}

/// `program`, run in network namespace `netns` if given.
pub fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, program]);
            command
        }
    }
}

/// Waits until something listens on `address:port` in network namespace `netns`.
pub fn wait_for_port_in(netns: &str, address: &str, port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = format!("import socket; socket.create_connection(('{address}', {port}), 1)");
    while !in_netns(Some(netns), "python3")
        .args(["-c", &probe])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {address}:{port} in {netns} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `log` has a line containing every one of `needles`, and returns that line.
pub fn wait_for_line(log: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needles:?} in {} within 30 s:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
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

/// GET /metrics from `imgate up`'s metrics endpoint on `port`.
pub fn scrape(port: u16) -> String {
    let response = http_get(port, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// GET `path` from loopback `port`: the whole response.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut connection = TcpStream::connect(("127.0.0.1", port)).expect("HTTP endpoint");
    connection
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("request");
    let mut response = String::new();
    connection.read_to_string(&mut response).expect("response");
    response
}

/// `who`'s `presence` records, in order: (change, room, text).
pub fn presence_of<'a>(records: &'a [Value], who: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    records
        .iter()
        .filter(|r| r["type"] == "presence" && r["who"]["handle"] == who)
        .map(|r| {
            (
                r["change"].as_str().unwrap_or_default(),
                r["room"].as_str().unwrap_or_default(),
                r["text"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// Stops `imgate up` with SIGTERM (which flushes the archive) and returns every archived
/// record of tenant `local` under `data`.
pub fn stop_and_read(imgate: Killed, data: &Path) -> Vec<Value> {
    stop_and_read_tenant(imgate, data, "local")
}

/// Stops `imgate up` with SIGTERM (waiting up to two minutes) and reads tenant `tenant`'s
/// archive from its data folder `data`: every record.
pub fn stop_and_read_tenant(imgate: Killed, data: &Path, tenant: &str) -> Vec<Value> {
    stop(imgate);
    let archive = data.join("archive");
    read_archive(tenant, &["--dir", &archive.to_string_lossy()], &[])
}

/// Creates `bucket` (with Object Lock when `locked`) in the S3 API server at `endpoint`, with
/// the test credentials; returns a client of it.
pub async fn s3_bucket(
    endpoint: &str,
    bucket: &str,
    locked: bool,
) -> imgate_dataplane::archive::store::S3Store {
    use imgate_dataplane::archive::store::{S3Config, S3Store};
    let store = S3Store::connect(&S3Config {
        bucket: bucket.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.into()),
        credentials: Some(("test".into(), "test".into())),
        timeout: None,
    })
    .await;
    store
        .client()
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(locked)
        .send()
        .await
        .expect("bucket");
    store
}

/// Stops `imgate up` as [`stop_and_read_tenant`] does and reads the `local` tenant's archive
/// from `bucket` of the S3 API server at `endpoint`.
pub fn stop_and_read_s3(imgate: Killed, endpoint: &str, bucket: &str) -> Vec<Value> {
    stop(imgate);
    read_archive(
        "local",
        &["--s3-bucket", bucket, "--s3-endpoint", endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

/// Stops `imgate up` with SIGTERM and waits for it (two minutes at most: a guard against a
/// shutdown that never ends, not a time limit).
/// Stops a process with SIGTERM and waits (up to two minutes) until it has exited.
pub fn stop(imgate: Killed) {
    let mut imgate = imgate;
    assert!(
        Command::new("kill")
            .args(["-TERM", &imgate.0.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while imgate.0.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "{:?} did not stop within two minutes of SIGTERM",
            imgate.0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of tenant `tenant` in the archive that `store` (options of `imgate archive`)
/// names, read with the environment variables `env`.
fn read_archive(tenant: &str, store: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let search = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["archive", "--tenant", tenant])
        .args(store)
        .args(["search", "--json"])
        .envs(env.iter().copied())
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

/// Runs a command that must succeed.
pub fn run(command: &mut Command) {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Options `imgate up` gets unless the caller gives them: a metrics port of its own, and
/// segments sealed every second.
const UP_DEFAULTS: [(&str, &str); 3] = [
    ("--metrics", "127.0.0.1:0"),
    ("--seal-seconds", "1"),
    // The tests' servers (Prosody, ngIRCd) listen on loopback, which clients' sessions may
    // not reach unless allowed.
    ("--allow-destination", "127.0.0.0/8"),
];

/// A policy for tests of relaying itself, which lets traffic imgate cannot identify through
/// (the embedded policy refuses it).
pub const RELAY_UNIDENTIFIED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/relay-unidentified"
);

/// Runs `imgate` with `args` and the environment variables `env`; returns its exit code and
/// its standard output followed by its standard error.
pub fn imgate_output(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("imgate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// `imgate up` with its data in `data` (its standard error in `data.log` beside it),
/// forwarding a free port to `upstream` on loopback, with the `extra` options; returns it and
/// the port.
pub fn imgate_up(upstream: u16, data: &Path, extra: &[&str]) -> (Killed, u16) {
    imgate_up_with_env(upstream, data, extra, &[])
}

/// [`imgate_up`] with the environment variables `env` set.
pub fn imgate_up_with_env(
    upstream: u16,
    data: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Killed, u16) {
    let front = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_imgate"));
    command.envs(env.iter().copied());
    command
        .args(["up", "--socks", "off", "--http", "off", "--forward"])
        .arg(format!("127.0.0.1:{front}=127.0.0.1:{upstream}"))
        .arg("--data")
        .arg(data);
    for (option, value) in UP_DEFAULTS {
        if !extra.contains(&option) {
            command.args([option, value]);
        }
    }
    let log = data.with_extension("log");
    (
        serve_logged(command.args(extra), front, "imgate up", &log),
        front,
    )
}

/// Prosody on a free port with a self-signed certificate for localhost; returns the server,
/// its port and its certificate.
pub fn prosody(dir: &Path) -> (Killed, u16, PathBuf) {
    let (server, port, _, certificate) = prosody_with_direct_tls(dir);
    (server, port, certificate)
}

/// [`prosody`], also listening for XMPP over direct TLS (XEP-0368); returns the server, its
/// STARTTLS port, its direct-TLS port and its certificate.
pub fn prosody_with_direct_tls(dir: &Path) -> (Killed, u16, u16, PathBuf) {
    prosody_in(dir, None, "127.0.0.1")
}

/// [`prosody_with_direct_tls`] listening on `address`, in network namespace `netns` if given.
pub fn prosody_in(dir: &Path, netns: Option<&str>, address: &str) -> (Killed, u16, u16, PathBuf) {
    let port = free_port();
    let tls_port = free_port();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs");
    std::fs::create_dir_all(dir.join("data")).expect("data");
    let (crt, key) = (certs.join("localhost.crt"), certs.join("localhost.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            // What a server's administrator makes with `openssl req -x509`: a self-signed
            // certificate that is also a CA (CA:TRUE), which imgate accepts, given with
            // --extra-roots, as exactly that server's.
            "-addext",
            "subjectAltName=DNS:localhost,DNS:conference.localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    std::fs::copy(&crt, certs.join("conference.localhost.crt")).expect("copy");
    std::fs::copy(&key, certs.join("conference.localhost.key")).expect("copy");
    let config = dir.join("prosody.cfg.lua");
    std::fs::write(
        &config,
        format!(
            "run_as_root = true\npidfile = \"{d}/prosody.pid\"\ndata_path = \"{d}/data\"\ninterfaces = {{ \"{address}\" }}\nc2s_ports = {{ {port} }}\nc2s_direct_tls_ports = {{ {tls_port} }}\nmodules_disabled = {{ \"s2s\" }}\nmodules_enabled = {{ \"roster\", \"saslauth\", \"tls\", \"disco\", \"ping\", \"carbons\", \"smacks\" }}\nc2s_require_encryption = true\nauthentication = \"internal_hashed\"\ncertificates = \"{d}/certs\"\nlog = {{ warn = \"{d}/prosody.log\" }}\nVirtualHost \"localhost\"\nComponent \"conference.localhost\" \"muc\"\n  muc_room_locking = false\n",
            d = dir.display()
        ),
    )
    .expect("config");
    for (user, password) in [("alice", "alicepw"), ("bob", "bobpw")] {
        run(Command::new("prosodyctl")
            .arg("--config")
            .arg(&config)
            .args(["register", user, "localhost", password]));
    }
    let what = "prosody (scripts/test installs it: apt-get install prosody)";
    let mut command = in_netns(netns, "prosody");
    command.arg("-F").arg("--config").arg(&config);
    let server = match netns {
        None => serve(&mut command, port, what),
        Some(netns) => {
            let server = Killed(
                command
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect(what),
            );
            wait_for_port_in(netns, address, port, what);
            server
        }
    };
    match netns {
        None => wait_for_port(tls_port, "prosody (direct TLS)"),
        Some(netns) => wait_for_port_in(netns, address, tls_port, "prosody (direct TLS)"),
    }
    (server, port, tls_port, crt)
}

/// ngIRCd on a free loopback port, its files in `dir`; returns the server and its port.
pub fn ngircd(dir: &Path) -> (Killed, u16) {
    let port = free_port();
    let config = dir.join("ngircd.conf");
    std::fs::write(
        &config,
        format!(
            "[Global]\nName = irc.test.local\nInfo = imgate test\nListen = 127.0.0.1\nPorts = {port}\nAdminInfo1 = imgate\nAdminInfo2 = test\nAdminEMail = admin@test.local\nPidFile = {}\n[Limits]\nMaxConnectionsIP = 0\n[Options]\nPAM = no\nDNS = no\nIdent = no\n",
            dir.join("ngircd.pid").display()
        ),
    )
    .expect("config");
    let server = serve(
        Command::new("ngircd").args(["-n", "-f", config.to_str().expect("utf-8")]),
        port,
        "ngircd (scripts/test installs it: apt-get install ngircd)",
    );
    (server, port)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The directory the identity tests use: Alice Smith (`alice@127.0.0.1` on IRC), a trader.
const PEOPLE: &str = "dn: dc=acme,dc=example
objectClass: dcObject
objectClass: organization
dc: acme
o: Acme

dn: ou=people,dc=acme,dc=example
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=acme,dc=example
objectClass: inetOrgPerson
objectClass: imUser
uid: alice
cn: Alice Smith
sn: Smith
mail: alice.smith@acme.example
departmentNumber: traders
imHandle: alice@127.0.0.1
";

/// Starts OpenLDAP's slapd on a free port with a small IM-handle schema (`imHandle`, class
/// `imUser`) and loads [`PEOPLE`] under `dc=acme,dc=example` (anonymous reads allowed).
pub fn slapd(dir: &Path) -> (Killed, u16) {
    let port = free_port();
    let db = dir.join("ldap-db");
    std::fs::create_dir_all(&db).expect("ldap db");
    let schema = dir.join("im.schema");
    std::fs::write(
        &schema,
        "attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'imHandle' DESC 'An IM handle' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )\nobjectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'imUser' DESC 'A person with IM handles' AUXILIARY MAY imHandle )\n",
    )
    .expect("schema");
    let config = dir.join("slapd.conf");
    std::fs::write(
        &config,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\ninclude /etc/ldap/schema/inetorgperson.schema\ninclude {schema}\npidfile {d}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nsuffix \"dc=acme,dc=example\"\nrootdn \"cn=admin,dc=acme,dc=example\"\nrootpw secret\ndirectory {db}\nindex mail,uid,imHandle eq\n",
            schema = schema.display(),
            d = dir.display(),
            db = db.display(),
        ),
    )
    .expect("slapd.conf");
    let server = serve(
        Command::new("slapd")
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .arg("-f")
            .arg(&config)
            .args(["-d", "0"]),
        port,
        "slapd (apt-get install slapd ldap-utils)",
    );
    let people = dir.join("people.ldif");
    std::fs::write(&people, PEOPLE).expect("ldif");
    run(Command::new("ldapadd")
        .args(["-x", "-H", &format!("ldap://127.0.0.1:{port}/")])
        .args(["-D", "cn=admin,dc=acme,dc=example", "-w", "secret", "-f"])
        .arg(&people));
    (server, port)
}
