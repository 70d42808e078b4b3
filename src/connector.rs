//! `imgate connector`: the program at a customer's site that carries its IM connections to
//! the tenant's dataplane through the tunnel. `enroll` gives it an identity with a one-time
//! token (its key is made here and never leaves), `request` makes a certificate request for
//! offline signing (`imgate tunnel sign`), `renew` renews now (dataplanes sign renewals in
//! the last third of a certificate's life only), and `run` serves.
//!
//! Invariants: the identity folder always holds a key and the certificate for it: a new
//! identity is written beside the old one and synced, a `commit` marker is made, then each
//! file is renamed into place and the marker removed; reading the folder first finishes a
//! committed change, or drops an uncommitted one, so a crash never leaves a key with another
//! key's certificate. A request's key is kept (`pending-key.pem`) until its certificate is
//! stored, so a request whose answer was lost is asked again with the same key. The CA a
//! dataplane returns is accepted only if it is the one the
//! token pins (enrollment) or the one already held (renewal). `run` renews when a third of
//! the certificate's lifetime is left, and new connections use the renewed identity at once.
//!
//! A connector runs on one thread: it carries one site's connections, and the tasks of a
//! tunnel (relays, the QUIC connection and endpoint) that wake one another on one thread
//! spend a fifth less CPU per byte than across threads (BENCHMARKS.md).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};
use imgate_dataplane::proxy::frontend::Frontend;
use imgate_dataplane::proxy::tls::write_private;
use imgate_dataplane::tunnel::connector::Connector;
use imgate_dataplane::tunnel::enroll::{self, pem};
use imgate_dataplane::tunnel::target::Target;
use imgate_dataplane::tunnel::tokens::Token;
use imgate_dataplane::tunnel::{endpoint, trust};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;

use crate::connector_health;

/// Where the connector's identity is and which dataplanes it dials.
#[derive(Args, Clone)]
pub struct DialArgs {
    /// The connector's identity folder (`key.pem`, `cert.pem`, `ca.pem`).
    #[arg(long, default_value = "imgate-connector")]
    identity: PathBuf,
    /// A dataplane's tunnel address, `HOST:PORT` on UDP: the tenant's tunnel endpoint, or
    /// one dataplane's address (repeat for several). Names are looked up at every dial.
    #[arg(long = "dataplane", required = true, value_parser = target)]
    dataplanes: Vec<Target>,
    /// The name in the dataplanes' certificate (default: the host, when it is a name, else
    /// `localhost`).
    #[arg(long)]
    server_name: Option<String>,
    /// The largest UDP datagram the tunnel uses, in bytes of payload. Each connection finds
    /// what its path carries up to this; lower it only where a network loses large datagrams
    /// without saying so (1452 suits any Ethernet path).
    #[arg(long, default_value_t = endpoint::MAX_DATAGRAM,
          value_parser = clap::value_parser!(u16).range(1200..=65527))]
    max_datagram: u16,
}

fn target(text: &str) -> Result<Target, String> {
    Target::parse(text, None).map_err(|e| e.to_string())
}

impl DialArgs {
    /// The dataplanes, each with the name its certificate carries.
    fn targets(&self) -> Vec<Target> {
        self.dataplanes
            .iter()
            .map(|target| match &self.server_name {
                Some(name) => Target {
                    server_name: name.clone(),
                    ..target.clone()
                },
                None => target.clone(),
            })
            .collect()
    }
}

/// `imgate connector` subcommands.
#[derive(Subcommand)]
pub enum ConnectorCommand {
    /// Enroll with a one-time token from `imgate tunnel token`.
    Enroll {
        /// The token.
        #[arg(long)]
        token: String,
        #[command(flatten)]
        dial: DialArgs,
    },
    /// Make this connector's key and a certificate request (`key.pem`, `request.pem`) for
    /// `imgate tunnel sign`.
    Request {
        /// The connector's id.
        #[arg(long)]
        id: String,
        /// The connector's identity folder.
        #[arg(long, default_value = "imgate-connector")]
        identity: PathBuf,
    },
    /// Renew the connector's certificate now; dataplanes sign renewals in the last third of
    /// its life only (`run` renews then on its own).
    Renew(DialArgs),
    /// Carry local connections to the dataplanes until Ctrl-C or SIGTERM.
    Run(RunArgs),
}

/// `imgate connector run` options.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    dial: DialArgs,
    /// A one-time enrollment token, used only when the identity folder holds no identity
    /// yet (so a restarted connector keeps the identity it has).
    #[arg(long, env = "IMGATE_ENROLLMENT_TOKEN", hide_env_values = true)]
    enrollment_token: Option<String>,
    /// Connections kept to the dataplanes (each prefers a dataplane the others do not use).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// SOCKS5 listener (`off` for none).
    #[arg(long, default_value = "127.0.0.1:1080")]
    socks: String,
    /// HTTP CONNECT listener (`off` for none).
    #[arg(long, default_value = "off")]
    http: String,
    /// A fixed port-forward, `LISTEN=HOST:PORT` (repeat for several).
    #[arg(long = "forward", value_name = "LISTEN=HOST:PORT")]
    forwards: Vec<String>,
    /// Prometheus metrics and health endpoint (`/metrics`, `/healthz`; `off` for none).
    #[arg(long, default_value = "127.0.0.1:9465")]
    metrics: String,
}

/// Runs a connector subcommand.
pub fn run(command: ConnectorCommand) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match command {
        ConnectorCommand::Request { id, identity } => {
            let (key, request) = trust::connector_request(&id)?;
            std::fs::create_dir_all(&identity)
                .with_context(|| format!("cannot create {}", identity.display()))?;
            let key_path = identity.join("key.pem");
            write_private(&key_path, key.serialize_pem().as_bytes()).with_context(|| {
                format!(
                    "cannot create {} (does it exist already?)",
                    key_path.display()
                )
            })?;
            std::fs::write(identity.join("request.pem"), request)?;
            println!(
                "wrote {}; have it signed (imgate tunnel sign), then run the connector",
                identity.join("request.pem").display()
            );
            Ok(0)
        }
        ConnectorCommand::Enroll { token, dial } => runtime.block_on(async move {
            enroll_with(&token, &dial).await?;
            Ok(0)
        }),
        ConnectorCommand::Renew(dial) => runtime.block_on(async move {
            let (id, not_after) = renew(&dial).await?;
            println!("connector {id} renewed; its certificate is valid until {not_after}");
            Ok(0)
        }),
        ConnectorCommand::Run(args) => runtime.block_on(serve(args)),
    }
}

/// Enrolls with a one-time `token`, storing the identity in `dial.identity`.
async fn enroll_with(token: &str, dial: &DialArgs) -> anyhow::Result<()> {
    let token = Token::parse(token)?;
    let config = endpoint::client(trust::enrollment_config(&token.ca_pin)?, dial.max_datagram)?;
    let expected = ExpectedCa::Pinned(token.ca_pin.clone());
    let id = obtain(
        dial,
        config,
        Some(&token.text()),
        &token.connector,
        &expected,
    )
    .await?;
    println!(
        "connector {id} is enrolled; its identity is in {}",
        dial.identity.display()
    );
    Ok(())
}

/// A UDP endpoint for tunnel connections of datagrams up to `max_datagram` bytes.
fn udp_endpoint(max_datagram: u16) -> anyhow::Result<quinn::Endpoint> {
    endpoint::bind((Ipv6Addr::UNSPECIFIED, 0).into(), None, max_datagram)
        .or_else(|_| endpoint::bind((Ipv4Addr::UNSPECIFIED, 0).into(), None, max_datagram))
        .context("cannot open a UDP socket for the tunnel")
}

/// The tunnel CA a dataplane's answer must carry.
enum ExpectedCa {
    /// The CA whose SHA-256 an enrollment token carries.
    Pinned(String),
    /// The CA this connector already holds.
    Held(CertificateDer<'static>),
}

impl ExpectedCa {
    fn check(&self, ca: &CertificateDer<'_>) -> anyhow::Result<()> {
        let matches = match self {
            ExpectedCa::Pinned(pin) => imgate_dataplane::tunnel::tokens::ca_pin(ca) == *pin,
            ExpectedCa::Held(held) => held.as_ref() == ca.as_ref(),
        };
        anyhow::ensure!(
            matches,
            "the dataplane answered with another tunnel CA than the one {}; nothing was stored",
            match self {
                ExpectedCa::Pinned(_) => "the token pins",
                ExpectedCa::Held(_) => "this connector holds",
            }
        );
        Ok(())
    }
}

/// Makes a new key and has the dataplanes sign it over `config` (with `token` when
/// enrolling), then stores the identity once its CA is the `expected` one; returns the
/// connector's id.
async fn obtain(
    dial: &DialArgs,
    config: quinn::ClientConfig,
    token: Option<&str>,
    id: &str,
    expected: &ExpectedCa,
) -> anyhow::Result<String> {
    let key = pending_key(&dial.identity)?;
    let request = trust::request_for(&key, id)?;
    let endpoint = udp_endpoint(dial.max_datagram)?;
    let mut failures = Vec::new();
    let mut addresses = Vec::new();
    for target in dial.targets() {
        match target.resolve().await {
            Ok(resolved) => addresses.extend(resolved.into_iter().map(|a| (a, target.clone()))),
            Err(error) => failures.push(error.to_string()),
        }
    }
    for (address, target) in addresses {
        match enroll::request(
            &endpoint,
            config.clone(),
            address,
            &target.server_name,
            token,
            &request,
        )
        .await
        {
            Ok(enrolled) => {
                expected.check(&enrolled.ca)?;
                store(&dial.identity, &key, &enrolled)?;
                let _ = std::fs::remove_file(dial.identity.join(PENDING_KEY));
                endpoint.wait_idle().await;
                return Ok(id.to_owned());
            }
            Err(error @ enroll::EnrollError::Refused(_)) => {
                tracing::warn!(target: "imgate::tunnel", dataplane = %target, "{error}");
                anyhow::bail!("{error}");
            }
            Err(error) => failures.push(format!("{target}: {error}")),
        }
    }
    anyhow::bail!("no dataplane could be reached: {}", failures.join("; "))
}

/// The key of a request whose certificate has not arrived yet: asked again with the same key
/// after a lost answer, so that the dataplane knows it is this connector asking (see the
/// tunnel's `generations`).
const PENDING_KEY: &str = "pending-key.pem";

/// The key a request is made for: the pending one, or a new one made pending.
fn pending_key(dir: &Path) -> anyhow::Result<rcgen::KeyPair> {
    let path = dir.join(PENDING_KEY);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return rcgen::KeyPair::from_pem(&text).with_context(|| format!("{}", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = rcgen::KeyPair::generate()?;
    write_private(&path, key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// The files of an identity, in the order they are put in place.
const IDENTITY_FILES: [&str; 3] = ["ca.pem", "key.pem", "cert.pem"];

/// Writes a new identity: every file beside the old one and synced, then the `commit`
/// marker, then each renamed into place, then the marker removed.
fn store(dir: &Path, key: &rcgen::KeyPair, enrolled: &enroll::Enrolled) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    finish_store(dir)?;
    let contents = [
        pem(&enrolled.ca),
        key.serialize_pem(),
        pem(&enrolled.certificate),
    ];
    for (name, text) in IDENTITY_FILES.iter().zip(&contents) {
        let fresh = dir.join(format!("{name}.new"));
        let _ = std::fs::remove_file(&fresh);
        // write_private syncs the file; the key is readable by its owner only.
        write_private(&fresh, text.as_bytes())
            .with_context(|| format!("cannot write {}", fresh.display()))?;
    }
    let sync = || -> anyhow::Result<()> {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))
    };
    sync()?;
    write_private(&dir.join("commit"), b"")
        .with_context(|| format!("cannot write {}", dir.join("commit").display()))?;
    sync()?;
    finish_store(dir)
}

/// Finishes a change of identity that a crash interrupted: a committed one is put in place,
/// an uncommitted one dropped.
fn finish_store(dir: &Path) -> anyhow::Result<()> {
    let commit = dir.join("commit");
    let committed = commit.exists();
    for name in IDENTITY_FILES {
        let fresh = dir.join(format!("{name}.new"));
        if !fresh.exists() {
            continue;
        }
        if committed {
            std::fs::rename(&fresh, dir.join(name))
        } else {
            std::fs::remove_file(&fresh)
        }
        .with_context(|| format!("cannot finish writing {}", dir.join(name).display()))?;
    }
    if committed {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .and_then(|()| std::fs::remove_file(&commit))
            .with_context(|| format!("cannot finish writing {}", dir.display()))?;
    }
    Ok(())
}

/// The identity in `dir`: the connector's id, its TLS identity, its CA, and its
/// certificate's validity.
struct Stored {
    id: String,
    identity: trust::Identity,
    ca: CertificateDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
}

fn load(dir: &Path) -> anyhow::Result<Stored> {
    if dir.exists() {
        finish_store(dir)?;
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (enroll first: imgate connector enroll --token TOKEN)",
                path.display()
            )
        })
    };
    let key = rcgen::KeyPair::from_pem(&String::from_utf8(read("key.pem")?)?).context("key.pem")?;
    let cert = CertificateDer::from_pem_slice(&read("cert.pem")?).context("cert.pem")?;
    let ca = CertificateDer::from_pem_slice(&read("ca.pem")?).context("ca.pem")?;
    let (_, id) = trust::connector_of(&cert).context("cert.pem names no connector")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).context("cert.pem")?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0).unsigned_abs())
    };
    let validity = parsed.validity();
    let (not_before, not_after) = (time(validity.not_before), time(validity.not_after));
    Ok(Stored {
        id,
        identity: trust::connector_identity(&key, cert)?,
        ca,
        not_before,
        not_after,
    })
}

/// Renews the identity in `dial.identity` with the dataplanes; returns the id and the new
/// expiry.
async fn renew(dial: &DialArgs) -> anyhow::Result<(String, humantime::Rfc3339Timestamp)> {
    let stored = load(&dial.identity)?;
    let config = endpoint::client(
        trust::renewal_config(&stored.ca, stored.identity)?,
        dial.max_datagram,
    )?;
    let expected = ExpectedCa::Held(stored.ca.clone());
    let id = obtain(dial, config, None, &stored.id, &expected).await?;
    let renewed = load(&dial.identity)?;
    Ok((id, humantime::format_rfc3339_seconds(renewed.not_after)))
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal: once a
/// third of its lifetime is left.
fn renewal_due(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_after - life / 3
}

/// Renews whenever due, and has `connector` use the new identity.
async fn keep_renewed(dial: DialArgs, connector: Arc<Connector>) {
    loop {
        let due = match load(&dial.identity) {
            Ok(stored) if stored.not_after <= SystemTime::now() => {
                tracing::error!(target: "imgate::tunnel", connector = %stored.id, "the certificate expired at {}: enroll again (imgate tunnel token, then imgate connector enroll)", humantime::format_rfc3339_seconds(stored.not_after));
                return;
            }
            Ok(stored) => renewal_due(stored.not_before, stored.not_after),
            Err(error) => {
                tracing::error!(target: "imgate::tunnel", "{error:#}");
                return;
            }
        };
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let renewed = async {
            let (id, until) = renew(&dial).await?;
            let stored = load(&dial.identity)?;
            let tls = trust::connector_config(&stored.ca, stored.identity)?;
            connector.set_client_config(endpoint::client(tls, dial.max_datagram)?);
            anyhow::Ok((id, until))
        };
        match renewed.await {
            Ok((id, until)) => {
                tracing::info!(target: "imgate::tunnel", connector = %id, "certificate renewed, valid until {until}");
                // A certificate short enough to be due again at once renews once a minute.
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Err(error) => {
                tracing::warn!(target: "imgate::tunnel", "renewal failed, retrying in a minute: {error:#}");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

async fn listen(spec: &str, frontend: Frontend) -> anyhow::Result<Option<(TcpListener, Frontend)>> {
    if spec == "off" {
        return Ok(None);
    }
    let listener = TcpListener::bind(spec).await.with_context(|| {
        format!("cannot listen on {spec} (in use? choose another with the option)")
    })?;
    Ok(Some((listener, frontend)))
}

async fn listeners(args: &RunArgs) -> anyhow::Result<Vec<(TcpListener, Frontend)>> {
    let mut listeners = Vec::new();
    listeners.extend(listen(&args.socks, Frontend::Socks5).await?);
    listeners.extend(listen(&args.http, Frontend::HttpConnect).await?);
    for forward in &args.forwards {
        let (local, upstream) = forward
            .split_once('=')
            .with_context(|| format!("{forward:?}: write a forward as LISTEN=HOST:PORT"))?;
        let (host, port) = upstream
            .rsplit_once(':')
            .with_context(|| format!("{upstream:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("{port:?} is not a port"))?;
        let frontend = Frontend::Forward {
            host: host.to_owned(),
            port,
        };
        listeners.extend(listen(local, frontend).await?);
    }
    anyhow::ensure!(
        !listeners.is_empty(),
        "nothing to listen on: give --socks, --http or --forward"
    );
    Ok(listeners)
}

async fn serve(args: RunArgs) -> anyhow::Result<i32> {
    if let Some(token) = &args.enrollment_token
        && !args.dial.identity.join("cert.pem").exists()
    {
        enroll_with(token, &args.dial).await?;
        tracing::info!(target: "imgate::tunnel", identity = %args.dial.identity.display(), "enrolled with the one-time token");
    }
    let stored = load(&args.dial.identity)?;
    let id = stored.id.clone();
    let tls = trust::connector_config(&stored.ca, stored.identity)?;
    let config = endpoint::client(tls, args.dial.max_datagram)?;
    let endpoints = (0..args.connections.max(1))
        .map(|_| udp_endpoint(args.dial.max_datagram))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let connector = Arc::new(Connector::new(&id, endpoints, config, args.dial.targets()));
    let listeners = listeners(&args).await?;
    println!("imgate connector {id} is up");
    for (listener, _) in &listeners {
        println!("  listening on {}", listener.local_addr()?);
    }
    if args.metrics != "off" {
        let address = connector_health::serve(&args.metrics, connector.clone()).await?;
        println!("  metrics                http://{address}/metrics");
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(connector.clone().maintain());
    tasks.spawn(keep_renewed(args.dial.clone(), connector.clone()));
    for (listener, frontend) in listeners {
        let connector = connector.clone();
        tasks.spawn(async move {
            loop {
                let (client, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = client.set_nodelay(true);
                let serving = connector.clone().serve(frontend.clone(), client, peer);
                tokio::spawn(async move {
                    if let Err(error) = serving.await {
                        tracing::info!(target: "imgate::tunnel", %peer, "connection not carried: {error}");
                    }
                });
            }
        });
    }
    crate::up::shutdown_signal().await;
    tasks.abort_all();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_when_a_third_of_the_life_is_left() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(30 * 86_400);
        assert_eq!(
            renewal_due(start, end),
            start + Duration::from_secs(20 * 86_400)
        );
        assert_eq!(
            renewal_due(end, start),
            start,
            "a backwards validity is due at once"
        );
    }

    /// A CA as the dataplane's answer carries it.
    fn ca(name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.self_signed(&key).expect("CA").der().clone()
    }

    #[test]
    fn a_returned_ca_is_taken_only_if_it_is_the_pinned_or_the_held_one() {
        let (ours, theirs) = (ca("ours"), ca("theirs"));
        let pin = imgate_dataplane::tunnel::tokens::ca_pin(&ours);
        ExpectedCa::Pinned(pin.clone())
            .check(&ours)
            .expect("the pinned CA");
        let error = ExpectedCa::Pinned(pin)
            .check(&theirs)
            .expect_err("another CA");
        assert!(error.to_string().contains("the token pins"), "{error}");
        ExpectedCa::Held(ours.clone())
            .check(&ours)
            .expect("the held CA");
        assert!(ExpectedCa::Held(ours).check(&theirs).is_err());
    }

    #[test]
    fn a_change_of_identity_cut_short_is_finished_if_committed_and_dropped_if_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let put =
            |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read");
        for name in IDENTITY_FILES {
            put(name, "old");
        }
        // Cut short before the commit: the new files are dropped, the old identity stays.
        put("key.pem.new", "new");
        put("cert.pem.new", "new");
        finish_store(dir.path()).expect("finished");
        assert_eq!(
            IDENTITY_FILES.map(read),
            ["old", "old", "old"],
            "nothing of an uncommitted change is used"
        );
        assert!(!dir.path().join("key.pem.new").exists());

        // Cut short after the commit, one file already in place: the rest follow.
        put("key.pem", "new");
        put("cert.pem.new", "new");
        put("ca.pem.new", "new");
        put("commit", "");
        finish_store(dir.path()).expect("finished");
        assert_eq!(IDENTITY_FILES.map(read), ["new", "new", "new"]);
        assert!(!dir.path().join("commit").exists(), "the marker goes last");
    }

    #[test]
    fn a_request_is_asked_again_with_its_key_until_its_certificate_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = dir.path().join("desk-1");
        let first = pending_key(&identity).expect("a new key");
        let again = pending_key(&identity).expect("the same key");
        assert_eq!(first.serialize_der(), again.serialize_der());
        std::fs::remove_file(identity.join(PENDING_KEY)).expect("stored: no longer pending");
        let next = pending_key(&identity).expect("a new key");
        assert_ne!(first.serialize_der(), next.serialize_der());
    }
}
