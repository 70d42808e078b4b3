//! `imgate up`: imgate's main job on this machine with embedded defaults: a dataplane
//! enforcing an example policy (or yours), SOCKS5 and HTTP CONNECT on loopback, optional
//! fixed port-forwards, the archive in a local directory, and a live view of sessions and
//! verdicts in the terminal. Changed `--policy` files (looked at every
//! `--policy-poll-seconds`, and on SIGHUP) are reloaded without dropping sessions; in a
//! cluster, the policy, the identity sources and the revoked connectors follow their ConfigMap
//! through the API instead (`--policy-config-map`, [`crate::up_follow`]), and enrollment
//! tokens are redeemed from the Secret the operator mints into (`--enrollment-secret`). The
//! tunnel's certificate is issued again before it expires. Ctrl-C stops it after the archive
//! is flushed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use imgate_crds::IMPolicy;
use imgate_crds::tenant::ArchiveFailure;
use imgate_dataplane::archive::fs::StdFs;
use imgate_dataplane::archive::segment::Layout;
use imgate_dataplane::archive::store::{Encryption, LocalStore, S3Config, S3Store};
use imgate_dataplane::archive::unended;
use imgate_dataplane::archive::{
    ArchiveLog, LogConfig, ShipMonitor, Shipper, ShipperConfig, Store,
};
use imgate_dataplane::identity::Directory;
use imgate_dataplane::inspect::policy::CompiledPolicy;
use imgate_dataplane::proxy::frontend::Frontend;
use imgate_dataplane::proxy::server;
use imgate_dataplane::proxy::shared::{ForwardAfter, Shared};
use imgate_dataplane::proxy::tls::{InterceptionCa, load_certificates, upstream_config};
use imgate_dataplane::proxy::xmpp_relay::TlsContext;
use imgate_dataplane::tunnel::listener;
use imgate_dataplane::tunnel::server_cert::{self, ServerCertificate};
use imgate_dataplane::tunnel::tokens::{Redeemer, TunnelState};
use imgate_operator::enrollment::{SecretGenerations, SecretTokens};
use tokio::net::TcpListener;

use crate::policy::lint::{Level, Workspace};
use crate::up_follow::Delivery;
use crate::{policy_watch, up_identity, up_report};

const DEFAULT_POLICY: &str = include_str!("default-policy.yaml");

/// How long the dataplane's tunnel certificate is valid; a new one is issued in time.
const TUNNEL_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// `imgate up` options.
#[derive(Args, Clone)]
pub struct UpArgs {
    /// SOCKS5 listener (`off` for none).
    #[arg(long, default_value = "127.0.0.1:1080")]
    socks: String,
    /// HTTP CONNECT listener (`off` for none).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// A fixed port-forward, `LISTEN=HOST:PORT` (repeat for several).
    #[arg(long = "forward", value_name = "LISTEN=HOST:PORT")]
    forwards: Vec<String>,
    /// Policy files or folders (default: the embedded example policy); a Tenant among them
    /// supplies its static identities.
    #[arg(long)]
    policy: Vec<PathBuf>,
    /// The tenant the policies are for.
    #[arg(long, default_value = "local")]
    tenant: String,
    /// Where the log and the archive live.
    #[arg(long, default_value = "imgate-data")]
    data: PathBuf,
    /// The most client connections the listeners hold at once (each also takes an upstream
    /// connection); by default as many as the descriptor limit leaves room for, keeping
    /// descriptors for the archive and the rest. Connections over it are closed at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// The most bytes all sessions' read buffers may hold together beyond 16 KiB each (an
    /// element being received, up to 256 KiB): a session that would take them over it ends.
    #[arg(long, value_name = "SIZE", default_value = "256Mi", value_parser = |text: &str| imgate_crds::units::parse_size(text).map_err(|e| e.to_string()))]
    max_buffered: u64,
    /// The most bytes the read buffers of one source's sessions (an IPv4 address, an IPv6
    /// /64) may hold together beyond 16 KiB each: a session that would take them over it ends.
    #[arg(long, value_name = "SIZE", default_value = "32Mi", value_parser = |text: &str| imgate_crds::units::parse_size(text).map_err(|e| e.to_string()))]
    max_buffered_per_source: u64,
    /// The most client connections from one source (an IPv4 address, an IPv6 /64) at once.
    #[arg(long, value_name = "N", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_source: u64,
    /// Prometheus metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`; `off` for
    /// none).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: String,
    /// A network that SOCKS5, HTTP CONNECT and tunnel clients may reach although it is refused
    /// by default (loopback, private, link-local and other non-public ranges), e.g.
    /// `10.20.0.0/16` for an IM server inside the cluster; or a domain, e.g. `chat.example`:
    /// once one is given, those clients reach only names in the allowed domains (each with
    /// every name under it) and addresses in the allowed networks (repeat for several). Fixed
    /// `--forward` destinations need none.
    #[arg(long = "allow-destination", value_name = "CIDR|DOMAIN", value_parser = imgate_dataplane::proxy::destination::Rule::parse)]
    allow_destinations: Vec<imgate_dataplane::proxy::destination::Rule>,
    /// A network, an address or a domain (and every name under it) that SOCKS5, HTTP CONNECT
    /// and tunnel clients may not reach even where it is public or allowed, e.g.
    /// `games.example` (repeat for several).
    #[arg(long = "deny-destination", value_name = "CIDR|DOMAIN", value_parser = imgate_dataplane::proxy::destination::Rule::parse)]
    deny_destinations: Vec<imgate_dataplane::proxy::destination::Rule>,
    /// The only ports those clients may reach, `5222` or `5222-5223` (repeat for several; any
    /// port when none is given).
    #[arg(long = "allow-port", value_name = "PORT[-PORT]", value_parser = imgate_dataplane::proxy::destination::Ports::parse)]
    allow_ports: Vec<imgate_dataplane::proxy::destination::Ports>,
    /// Extra PEM roots trusted for upstream servers, beside the system's (repeat for several).
    #[arg(long = "extra-roots", value_name = "PEM")]
    extra_roots: Vec<PathBuf>,
    /// When a message may be forwarded: once its record is `written` to the log file, or
    /// `synced` (fsynced; survives power loss, costs an fsync each way per message).
    #[arg(long, default_value = "written", value_parser = crate::parse_name::<ForwardAfter>)]
    forward_after: ForwardAfter,
    /// Seal a segment at least this often (seconds).
    #[arg(long, default_value_t = 20)]
    seal_seconds: u64,
    /// QUIC tunnel listener for connectors, on UDP (`off` for none).
    #[arg(long, default_value = "off")]
    tunnel: String,
    /// The tenant's tunnel folder: its tunnel CA (made on first use), enrollment tokens and
    /// revocation list; dataplanes of one tenant share it (default: the data folder's
    /// `tunnel/`).
    #[arg(long, value_name = "DIR")]
    tunnel_state: Option<PathBuf>,
    /// A name connectors dial this dataplane by, in its tunnel certificate (repeat for
    /// several).
    #[arg(long = "tunnel-name", value_name = "NAME", default_value = "localhost")]
    tunnel_names: Vec<String>,
    /// How long connectors' certificates are valid (`30days`, `12h`); they renew in the last
    /// third of that, and not before.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    connector_lifetime: Duration,
    /// How long a connector's previous certificate keeps working once it has renewed (so its
    /// own connections move over); after that only its newest certificate is accepted.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    renewal_grace: Duration,
    /// On SIGTERM, how long open tunnel sessions may run on while new ones go to other
    /// dataplanes (seconds).
    #[arg(long, default_value_t = 20)]
    drain_seconds: u64,
    /// On stop, how long the archive may take to ship what is left to the object store
    /// (seconds); what is not shipped by then stays in the log and ships at the next start.
    /// A pod's termination grace period should cover the drain and this.
    #[arg(long, default_value_t = 30)]
    flush_seconds: u64,
    /// Deliver alerts as this file says: a Tenant's `spec.alerts` (receivers: Alertmanager,
    /// a signed webhook, syslog over TLS, e-mail; severities; the grouping window). Alerts
    /// are read from the archive log, so none is lost to a restart or a receiver that is down.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// The folder holding the Secrets the alerts file names, one folder per Secret with a
    /// file per key (as Kubernetes mounts them); the alerts file's folder's `secrets/` when
    /// not given.
    #[arg(long, value_name = "DIR", requires = "alerts")]
    secrets: Option<PathBuf>,
    /// The longest wait between tries to deliver alerts to a receiver that fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "alerts")]
    alert_retry_max: Duration,
    /// How long a receiver fails before a `system` record `alert-receiver-down` is archived.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, requires = "alerts")]
    alert_down_after: Duration,
    /// Threads that carry sessions (default: one per CPU this process may use). A pod with
    /// one CPU runs best with one: tasks that wake one another on one thread spend a fifth
    /// less CPU per byte than across threads.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// A file listing revoked connectors, one id a line, instead of the tunnel folder's
    /// `revoked`; read at every connection and every second, a missing file revokes none.
    /// With --policy-config-map, the list that ConfigMap delivers replaces it once it arrives.
    #[arg(long, value_name = "FILE")]
    tunnel_revoked: Option<PathBuf>,
    /// Redeem enrollment tokens from this Secret of the pod's namespace, which the operator
    /// mints into and all of a tenant's dataplanes share, instead of from the tunnel folder
    /// (needs the Kubernetes API: in a pod with its service account, or a kubeconfig).
    #[arg(long, value_name = "NAME")]
    enrollment_secret: Option<String>,
    /// Keep the record of each connector's newest certificate in this Secret of the pod's
    /// namespace, which all of a tenant's dataplanes share and follow, instead of in the
    /// tunnel folder: a certificate one dataplane replaced stops working at every other
    /// (needs the Kubernetes API, as --enrollment-secret does).
    #[arg(long, value_name = "NAME")]
    generations_secret: Option<String>,
    /// Follow the policy set in this ConfigMap of the pod's namespace through the Kubernetes
    /// API, as the operator delivers it, instead of looking at the `--policy` files for
    /// changes (they give the policy at start).
    #[arg(long, value_name = "NAME")]
    policy_config_map: Option<String>,
    /// Report this dataplane's policy revision, open sessions, connectors and archive shipping
    /// in Lease NAME of the pod's namespace, from which the operator fills the Tenant's
    /// status (needs the Kubernetes API, as --enrollment-secret does).
    #[arg(long, value_name = "NAME")]
    report_lease: Option<String>,
    /// The pod's UID, which makes the report Lease the pod's (deleted with it).
    #[arg(long, env = "POD_UID", requires = "report_lease")]
    pod_uid: Option<String>,
    /// The tenant's tunnel CA folder (`ca.pem`, `ca.key`; made on first use), when it is not
    /// in the tunnel folder (a mounted Secret, say).
    #[arg(long, value_name = "DIR")]
    tunnel_ca: Option<PathBuf>,
    /// The interception CA folder (`ca.pem`, `ca.key`; made on first use) [default: the data
    /// folder's `ca/`].
    #[arg(long, value_name = "DIR")]
    interception_ca: Option<PathBuf>,
    /// Ship the archive to this S3 bucket (Object Lock enabled) instead of the data folder's
    /// `archive/`; credentials come from the usual AWS sources.
    #[arg(long, env = "IMGATE_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The bucket's region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Endpoint of an S3-compatible store.
    #[arg(long, env = "IMGATE_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, default_value = "", requires = "s3_bucket")]
    s3_prefix: String,
    /// How long a request to the bucket may wait to connect, or for an answer, before it
    /// fails and is retried (a whole upload may take ten times as long).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        requires = "s3_bucket"
    )]
    store_timeout: humantime::Duration,
    /// Days each archived object stays locked (S3 Object Lock).
    #[arg(long, requires = "s3_bucket")]
    retention_days: Option<u32>,
    /// `compliance` (nobody can shorten the lock) or `governance`.
    #[arg(long, default_value = "compliance", value_parser = ["compliance", "governance"])]
    retention_mode: String,
    /// How often to look for changed `--policy` files and reload them (0: only on SIGHUP).
    #[arg(long, default_value_t = 2)]
    policy_poll_seconds: u64,
    /// The tenant's identity sources, as a Tenant's `spec.identity` in YAML (static handles
    /// and an LDAP directory); instead of a Tenant's in the `--policy` files. With
    /// --policy-config-map, the sources that ConfigMap delivers replace them once they arrive.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Server-side encryption of archived objects: `s3` (SSE-S3) or `kms` (SSE-KMS, with
    /// `--s3-kms-key`); the bucket's default when not given.
    #[arg(long, value_parser = ["s3", "kms"], requires = "s3_bucket")]
    s3_encryption: Option<String>,
    /// The KMS key id or ARN for `--s3-encryption kms`.
    #[arg(long, requires = "s3_bucket")]
    s3_kms_key: Option<String>,
    /// When a message's record cannot be made durable: `block` (fail closed: nothing is
    /// forwarded unarchived) or `pass` (fail open: forward, and keep trying to archive).
    #[arg(long, default_value = "block", value_parser = crate::parse_name::<ArchiveFailure>)]
    on_archive_failure: ArchiveFailure,
    /// This dataplane's name in the archive's object keys; unique among a tenant's
    /// dataplanes (a pod's name).
    #[arg(long, env = "IMGATE_WRITER", default_value = "local-0")]
    writer: String,
}

impl UpArgs {
    /// The server-side encryption the options ask for.
    fn encryption(&self) -> anyhow::Result<Option<Encryption>> {
        match (self.s3_encryption.as_deref(), &self.s3_kms_key) {
            (Some("kms"), Some(key)) => Ok(Some(Encryption::Kms(key.clone()))),
            (Some("kms"), None) => anyhow::bail!("--s3-encryption kms needs --s3-kms-key KEY"),
            (_, Some(_)) => anyhow::bail!("--s3-kms-key goes with --s3-encryption kms"),
            (Some(_), None) => Ok(Some(Encryption::S3)),
            (None, None) => Ok(None),
        }
    }
}

/// The compiled policy, and who handles are: from `--identity`, else from the tenant's
/// Tenant when it is among the `--policy` files.
fn compile(args: &UpArgs) -> anyhow::Result<(CompiledPolicy, Directory)> {
    let (policy, tenant_identity) = if args.policy.is_empty() {
        // The example policy, for whichever tenant this dataplane serves.
        let mut policies: Vec<IMPolicy> =
            serde_saphyr::from_multiple(DEFAULT_POLICY).context("the embedded policy")?;
        for policy in &mut policies {
            policy.spec.tenant_ref.clone_from(&args.tenant);
        }
        let policy = CompiledPolicy::compile(&args.tenant, &policies)
            .map_err(|e| anyhow::anyhow!("the embedded policy: {e}"))?;
        (policy, None)
    } else {
        let workspace = Workspace::load(&args.policy);
        if workspace.count(Level::Error) > 0 {
            workspace.report(&mut std::io::stderr().lock())?;
            anyhow::bail!("the policies do not lint clean; fix them first (imgate policy lint)");
        }
        let (_, policy) = workspace
            .policy_for(Some(&args.tenant))
            .map_err(|e| anyhow::anyhow!("{e} (use --tenant)"))?;
        let identity = workspace
            .tenants
            .iter()
            .find(|t| t.metadata.name.as_deref() == Some(args.tenant.as_str()))
            .and_then(|t| t.spec.identity.clone());
        (policy.clone(), identity)
    };
    let identity = match &args.identity {
        Some(path) => Some(up_identity::read(path)?),
        None => tenant_identity,
    };
    Ok((policy, up_identity::directory(identity.as_ref())?))
}

async fn bind(spec: &str, frontend: Frontend) -> anyhow::Result<Option<(TcpListener, Frontend)>> {
    if spec == "off" {
        return Ok(None);
    }
    let address: SocketAddr = spec
        .parse()
        .with_context(|| format!("{spec:?} is not an address like 127.0.0.1:1080"))?;
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address} (in use? choose another with the option)")
    })?;
    Ok(Some((listener, frontend)))
}

/// Runs the dataplane until Ctrl-C or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        [&args.socks, &args.http, &args.tunnel]
            .iter()
            .any(|l| *l != "off")
            || !args.forwards.is_empty(),
        "nothing to listen on: give --socks, --http, --forward or --tunnel"
    );
    let encryption = args.encryption()?;
    let (policy, directory) = compile(&args)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.into());
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let client = kube_client(&args).await?;
        let (tunnel_state, generations) = tunnel_state(&args, client.clone());
        let tokens = token_store(&args, client.clone(), &tunnel_state);

        let _data_lock = lock_data_folder(&args.data)?;
        let wal = args.data.join("wal");
        let archive_dir = args.data.join("archive");
        let log_config = LogConfig {
            origin: (args.tenant.clone(), args.writer.clone()),
            forwards_refused: args.on_archive_failure == ArchiveFailure::Pass,
            ..LogConfig::default()
        };
        let (log, recovery) = ArchiveLog::open(StdFs, &wal, log_config).with_context(|| format!("cannot open the archive log in {}", wal.display()))?;
        // Best effort: a log that is full or cannot write must not keep the dataplane (and so
        // the shipper that would free it) from starting; the next start tries again.
        match unended::find(&StdFs, &wal).and_then(|open| unended::end(&log, &args.tenant, &args.writer, &open)) {
            Ok(0) => {}
            Ok(ended) => tracing::warn!(sessions = ended, "sessions earlier runs left open are ended in the archive"),
            Err(error) => tracing::error!(%error, "the sessions the last run left open could not be ended in the archive; the next start tries again"),
        }
        let layout = Layout { prefix: Layout::prefix(&args.s3_prefix), tenant: args.tenant.clone(), writer: args.writer.clone() };
        let mut shipper_config = ShipperConfig::new(layout);
        shipper_config.max_segment_age = Duration::from_secs(args.seal_seconds.max(1));
        shipper_config.retention = args.retention_days.map(|days| (days, args.retention_mode == "compliance"));
        shipper_config.encryption = encryption;
        let store = match &args.s3_bucket {
            Some(bucket) => Store::S3(S3Store::connect(&S3Config { bucket: bucket.clone(), region: args.s3_region.clone(), endpoint: args.s3_endpoint.clone(), credentials: None, timeout: Some(args.store_timeout.into()) }).await),
            None => Store::Local(LocalStore::new(&archive_dir)),
        };
        let shipper = Shipper::open(StdFs, &args.data, log.clone(), store, shipper_config)?;
        let ca_dir = args.interception_ca.clone().unwrap_or_else(|| args.data.join("ca"));
        let ca = Arc::new(InterceptionCa::load_or_generate(&ca_dir).with_context(|| format!("the interception CA in {}", ca_dir.display()))?);
        let mut roots = Vec::new();
        for path in &args.extra_roots {
            roots.extend(load_certificates(path)?);
        }
        let fail_closed = args.on_archive_failure == ArchiveFailure::Block;
        let mut shared = Shared::new(&args.tenant, &args.writer, policy, log.clone(), fail_closed);
        // Before the shipper runs: the outbox holds the records it has not read.
        let (alerting, alerts_unstarted) = match &args.alerts {
            Some(file) => {
                let options = crate::up_alerts::AlertOptions { file, secrets: args.secrets.as_deref(), retry_max: args.alert_retry_max, down_after: args.alert_down_after };
                match crate::up_alerts::open(&options, (&args.tenant, &args.writer), &args.data, &log, &mut shared.metrics) {
                    Ok(alerting) => (Some(alerting), None),
                    // In a cluster an alert setting must not stop the tenant's traffic: the
                    // dataplane runs without alerts and says why in the Tenant's status.
                    Err(error) if args.report_lease.is_some() => (None, Some(crate::up_alerts::unstarted(&error, (&args.tenant, &args.writer), &log))),
                    Err(error) => return Err(error),
                }
            }
            None => (None, None),
        };
        shared.set_directory(directory);
        shared.forward_after = args.forward_after;
        let most = connection_limit(args.max_connections);
        shared.admission = imgate_dataplane::proxy::admission::Admission::new(most, usize::try_from(args.max_connections_per_source).unwrap_or(usize::MAX));
        shared.buffers = Arc::new(imgate_dataplane::proxy::budget::Budget::new(
            usize::try_from(args.max_buffered).unwrap_or(usize::MAX),
            usize::try_from(args.max_buffered_per_source).unwrap_or(usize::MAX),
        ));
        shared.destinations = imgate_dataplane::proxy::destination::Destinations::new(args.allow_destinations.clone())
            .deny(args.deny_destinations.clone())
            .ports(args.allow_ports.clone());
        shared.tls = Some(Arc::new(TlsContext { ca: ca.clone(), upstream: upstream_config(&roots)? }));
        let shared = Arc::new(shared);
        // The tunnel (and its CA) first, and the TCP listeners last: once a port accepts,
        // everything it leads to is ready.
        if generations.is_some() && args.tunnel != "off" {
            share_generations(&args, &tunnel_state).await;
        }
        let tunnel = match args.tunnel.as_str() {
            "off" => None,
            spec => Some(tunnel_endpoint(spec, &args, tokens, tunnel_state.clone(), shared.clone())?),
        };
        let connectors = tunnel.as_ref().map(|parts| parts.tunnel.clone());
        let mut listeners = Vec::new();
        listeners.extend(bind(&args.socks, Frontend::Socks5).await?);
        listeners.extend(bind(&args.http, Frontend::HttpConnect).await?);
        for forward in &args.forwards {
            let (listen, upstream) = forward.split_once('=').with_context(|| format!("{forward:?}: write a forward as LISTEN=HOST:PORT"))?;
            let (host, port) = upstream.rsplit_once(':').with_context(|| format!("{upstream:?} is not HOST:PORT"))?;
            let port: u16 = port.parse().with_context(|| format!("{port:?} is not a port"))?;
            listeners.extend(bind(listen, Frontend::Forward { host: host.to_owned(), port }).await?);
        }

        println!("imgate is up for tenant {}", args.tenant);
        for (listener, frontend) in &listeners {
            let kind = match frontend {
                Frontend::Socks5 => "SOCKS5".to_owned(),
                Frontend::HttpConnect => "HTTP CONNECT".to_owned(),
                Frontend::Forward { host, port } => format!("forward to {host}:{port}"),
                Frontend::Tunnel { connector } => format!("tunnel from {connector}"),
            };
            println!("  {kind:<28} {}", listener.local_addr()?);
        }
        match &args.s3_bucket {
            Some(bucket) => {
                println!("  archive                      s3://{bucket}/{} ({} records recovered)", Layout::prefix(&args.s3_prefix), recovery.records);
                println!("  read it with                 imgate archive --tenant {} --s3-bucket {bucket} --s3-region {} ls|search|show|verify", args.tenant, args.s3_region);
            }
            None => {
                println!("  archive                      {} (a local directory: not WORM storage; {} records recovered)", archive_dir.display(), recovery.records);
                println!("  read it with                 imgate archive --tenant {} --dir {} ls|search|show|verify", args.tenant, archive_dir.display());
            }
        }
        println!("  interception CA              {} (trust it in IM clients to have their TLS inspected)", ca.cert_path.display());

        let stop_tunnel = Arc::new(tokio::sync::Notify::new());
        let tunnel = match tunnel {
            None => None,
            Some(TunnelParts { endpoint, tunnel, renewing }) => {
                let dir = tunnel_dir(&args.data, args.tunnel_state.as_deref());
                let enroll = match &args.enrollment_secret {
                    Some(name) => format!("enrollment tokens from Secret {name}"),
                    None => format!("enroll a connector: imgate tunnel token --state {} --connector NAME", dir.display()),
                };
                println!("  tunnel (QUIC, UDP)           {} ({enroll})", endpoint.local_addr()?);
                let stop = stop_tunnel.clone();
                let drain = Duration::from_secs(args.drain_seconds);
                Some((tokio::spawn(listener::run(tunnel, endpoint, async move { stop.notified().await }, drain)), renewing))
            }
        };
        if args.metrics != "off" {
            let address: SocketAddr = args.metrics.parse().with_context(|| format!("{:?} is not an address like 127.0.0.1:9464", args.metrics))?;
            let listener = TcpListener::bind(address).await.with_context(|| format!("cannot serve metrics on {address} (in use? choose another with --metrics)"))?;
            println!("  metrics                      http://{}/metrics", listener.local_addr()?);
            tokio::spawn(serve_metrics(listener, shared.clone(), shipper.health()));
        }
        let reloading = match &args.policy_config_map {
            Some(name) => format!("The policy follows ConfigMap {name}"),
            None => "Changed --policy files are reloaded".to_owned(),
        };
        println!("Point an IM client's proxy setting at the SOCKS5 address. {reloading}; Ctrl-C stops.");
        let reloads = tokio::spawn(reload_on_hangup(shared.clone(), args.clone()));
        let enforced = Arc::new(Mutex::new(None));
        let following = generations.map(|follower| {
            println!("  connector certificates       recorded in {}, shared by the tenant's dataplanes", imgate_dataplane::tunnel::generations::SharedRecord::describe(&follower));
            let state = tunnel_state.clone();
            tokio::spawn(async move { follower.follow(state.generations()).await })
        });
        let watching = match (&args.policy_config_map, client.clone()) {
            (Some(name), Some(client)) => {
                let delivery = Delivery { shared: shared.clone(), tenant: args.tenant.clone(), name: name.clone(), enforced: enforced.clone(), tunnel: tunnel_state };
                Some(tokio::spawn(delivery.follow(client)))
            }
            _ => (!args.policy.is_empty() && args.policy_poll_seconds > 0).then(|| {
                let (shared, args) = (shared.clone(), args.clone());
                let every = Duration::from_secs(args.policy_poll_seconds);
                tokio::spawn(policy_watch::watch(args.policy.clone(), every, move || reload(&shared, &args, "changed")))
            }),
        };
        let stop = Arc::new(tokio::sync::Notify::new());
        let archive_health = shipper.health();
        let shipping = {
            let stop = stop.clone();
            shipper.spawn(async move { stop.notified().await }, Duration::from_secs(args.flush_seconds)).context("cannot start the archive shipper")?
        };
        let (stop_alerts, alerts_stopped) = tokio::sync::watch::channel(false);
        let alert_health = alerting.as_ref().map(|alerting| alerting.health()).or(alerts_unstarted);
        let alerts = alerting.map(|alerting| {
            println!("  alerts                       {} receiver(s), from {}", alerting.receivers(), args.alerts.as_deref().unwrap_or(Path::new("")).display());
            tokio::spawn(alerting.run(alerts_stopped))
        });
        let reporting = match (&args.report_lease, client) {
            (Some(name), Some(client)) => {
                println!("  reports to the operator in   Lease {name}");
                let sources = up_report::Sources { shared: shared.clone(), tunnel: connectors, archive: archive_health, revision: enforced, alerts: alert_health };
                Some(up_report::spawn(client, name, args.pod_uid.clone(), &args.tenant, sources))
            }
            _ => None,
        };
        let run = shared.run().to_owned();
        server::run(shared, listeners, shutdown_signal()).await;
        if let Some((task, stop)) = reporting {
            stop.notify_one();
            let _ = task.await;
        }
        reloads.abort();
        for task in watching.into_iter().chain(following) {
            task.abort();
        }
        if let Some((tunnel, renewing)) = tunnel {
            stop_tunnel.notify_one();
            tunnel.await?;
            renewing.abort();
        }
        let _ = stop_alerts.send(true);
        if let Some(alerts) = alerts {
            let _ = alerts.await;
        }
        println!("stopping: flushing the archive");
        // No session starts any more: the marker, and a gap the log is still in, go out with
        // the flush.
        log.record_gap();
        if let Err(error) = unended::mark_stopped(&log, &args.tenant, &args.writer, &run) {
            tracing::error!(%error, "cannot record that imgate stops; its open sessions will be ended as after a crash");
        }
        stop.notify_one();
        let flushed = tokio::task::spawn_blocking(move || shipping.join()).await?.map_err(|_| anyhow::anyhow!("the archive shipper panicked"))?;
        log.close();
        if let Some(why) = log.failure() {
            println!("the archive log still cannot write ({why}): {} record(s) refused since start, and the gap is not recorded", log.refused());
        }
        match flushed {
            Ok(()) => {
                println!("archive flushed: every record is in the object store");
                Ok(0)
            }
            Err(unflushed) => {
                println!("archive NOT flushed: {unflushed}; they are kept in {} and ship when imgate starts again on this data folder", wal.display());
                Ok(1)
            }
        }
    })
}

/// The tenant's tunnel folder: `state` when given, else the data folder's `tunnel/`.
pub fn tunnel_dir(data: &Path, state: Option<&Path>) -> PathBuf {
    state.map_or_else(|| data.join("tunnel"), Path::to_owned)
}

/// The tenant's tunnel state: its tokens and revocations.
/// Holds the data folder `data` for this process alone, for as long as the returned file is
/// open: two processes appending to one archive log would number records twice. The lock is
/// the operating system's (`flock`), so a process that dies, even by `kill -9`, lets go.
fn lock_data_folder(data: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data folder {}", data.display()))?;
    let path = data.join("imgate.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another imgate ({}) is using the data folder {}: stop it first (its shutdown may still be flushing the archive), or give this one another --data",
                holder
                    .trim()
                    .strip_prefix("pid ")
                    .map_or_else(|| "process".to_owned(), |pid| format!("pid {pid}")),
                data.display()
            );
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "pid {}", std::process::id())?;
    Ok(file)
}

/// Descriptors kept for everything but client sessions: the archive log's files (one open,
/// the next made ready, those being deleted), the shipper's, the tunnel, the metrics and
/// health endpoint, DNS and TLS roots.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The most client connections: `given`, or as many as the descriptor limit leaves room for
/// once it is raised to its hard limit (each session holds two: its client and its upstream).
fn connection_limit(given: Option<u64>) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum || (limit.maximum.is_none() && limit.current.is_some()) {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "cannot raise the open-file limit to its hard limit");
        }
    }
    let descriptors = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let room = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    let most = match given {
        Some(given) if given > room => {
            tracing::warn!(
                given,
                room,
                descriptors,
                "--max-connections is more than the open-file limit leaves room for"
            );
            given
        }
        Some(given) => given,
        None => room.clamp(1, imgate_dataplane::proxy::admission::DEFAULT_MOST as u64),
    };
    usize::try_from(most).unwrap_or(usize::MAX)
}

/// Adds what the tunnel folder recorded of connectors' certificates to the shared record and
/// reads it, before the tunnel accepts connectors. While it cannot be read, connectors are
/// refused ("unavailable", and they try again) until the follow delivers it.
async fn share_generations(args: &UpArgs, state: &TunnelState) {
    let dir = tunnel_dir(&args.data, args.tunnel_state.as_deref());
    let generations = state.generations();
    match generations.adopt(&dir).await {
        Ok(0) => {}
        Ok(count) => {
            tracing::info!(target: "imgate::tunnel", "the certificates of {count} connector(s) recorded in {} added to the shared record", dir.display())
        }
        Err(error) => {
            tracing::warn!(target: "imgate::tunnel", "the certificates recorded in {} could not be added to the shared record: {error}", dir.display())
        }
    }
    if let Err(error) = generations.current().await {
        tracing::warn!(target: "imgate::tunnel", "{error}; connectors are refused until it can be read");
    }
}

/// The tunnel's state, and the follow of its shared certificate record when
/// `--generations-secret` keeps it in the cluster.
fn tunnel_state(
    args: &UpArgs,
    client: Option<kube::Client>,
) -> (TunnelState, Option<SecretGenerations>) {
    let mut state = TunnelState::new(&tunnel_dir(&args.data, args.tunnel_state.as_deref()));
    if let Some(file) = &args.tunnel_revoked {
        state = state.with_revocations(file);
    }
    match (&args.generations_secret, client) {
        (Some(name), Some(client)) => {
            let store = SecretGenerations::new(client, name);
            let state = state.with_shared_generations(Arc::new(store.clone()));
            (state, Some(store))
        }
        _ => (state, None),
    }
}

/// A client of the Kubernetes API, when an option needs one.
async fn kube_client(args: &UpArgs) -> anyhow::Result<Option<kube::Client>> {
    let needs = [
        ("--enrollment-secret", &args.enrollment_secret),
        ("--generations-secret", &args.generations_secret),
        ("--policy-config-map", &args.policy_config_map),
        ("--report-lease", &args.report_lease),
    ];
    let Some((option, Some(name))) = needs.into_iter().find(|(_, value)| value.is_some()) else {
        return Ok(None);
    };
    let client = kube::Client::try_default().await.map_err(|error| {
        anyhow::anyhow!("{option} {name} needs the Kubernetes API (run in a pod with its service account token, or set KUBECONFIG): {error}")
    })?;
    Ok(Some(client))
}

/// Where enrollment tokens are redeemed: the Secret `--enrollment-secret` names, else the
/// tunnel folder `state`.
fn token_store(
    args: &UpArgs,
    client: Option<kube::Client>,
    state: &TunnelState,
) -> Arc<dyn Redeemer> {
    match (&args.enrollment_secret, client) {
        (Some(name), Some(client)) => Arc::new(SecretTokens::new(client, name, &args.writer)),
        _ => Arc::new(state.clone()),
    }
}

/// A running tunnel's parts.
struct TunnelParts {
    /// Its QUIC endpoint.
    endpoint: quinn::Endpoint,
    /// What it serves.
    tunnel: Arc<listener::Tunnel>,
    /// The task that issues the endpoint new certificates in time.
    renewing: tokio::task::JoinHandle<()>,
}

/// The tunnel's QUIC endpoint on `spec`, under the tenant's tunnel CA (made on first use),
/// presenting a certificate for the names connectors dial; and the tunnel it serves,
/// redeeming enrollment tokens at `tokens`.
fn tunnel_endpoint(
    spec: &str,
    args: &UpArgs,
    tokens: Arc<dyn Redeemer>,
    state: TunnelState,
    shared: Arc<Shared>,
) -> anyhow::Result<TunnelParts> {
    use imgate_dataplane::tunnel::{endpoint, enroll, trust};
    let address: SocketAddr = spec
        .parse()
        .with_context(|| format!("{spec:?} is not an address like 127.0.0.1:4433"))?;
    let dir = tunnel_dir(&args.data, args.tunnel_state.as_deref());
    let ca_dir = args.tunnel_ca.as_deref().unwrap_or(&dir);
    let ca = trust::TunnelCa::load_or_generate(ca_dir, &args.tenant)
        .with_context(|| format!("the tunnel CA in {}", ca_dir.display()))?;
    let ca = Arc::new(ca);
    let certificate = ServerCertificate::new(&args.tunnel_names, TUNNEL_CERTIFICATE_LIFETIME);
    let (config, issued) = certificate.issue(&ca)?;
    let endpoint = endpoint::bind(address, Some(config), endpoint::MAX_DATAGRAM).with_context(|| {
        format!(
            "cannot listen for the tunnel on UDP {address} (in use? choose another with --tunnel)"
        )
    })?;
    let renewing = tokio::spawn(server_cert::keep_renewed(
        endpoint.clone(),
        ca.clone(),
        certificate,
        issued,
    ));
    let authority = enroll::Authority {
        ca,
        tokens,
        state,
        lifetime: args.connector_lifetime,
        renewal_grace: args.renewal_grace,
    };
    Ok(TunnelParts {
        endpoint,
        tunnel: Arc::new(listener::Tunnel::new(shared, authority)),
        renewing,
    })
}

/// Serves `/metrics` (Prometheus text format), `/readyz`, which fails while the archive log
/// cannot write (it refuses records, and so, failing closed, messages, and tries again by
/// itself), and `/healthz`, which fails only when the log failed in a way that only a restart
/// recovers from (an fsync failed).
async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>, shipping: Arc<ShipMonitor>) {
    let check = |for_good_only: bool| {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                let failure = shared.archive.failure();
                match failure {
                    Some(why) if !for_good_only || shared.archive.failed_for_good() => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("the archive log cannot write: {why}\n"),
                    ),
                    _ => (axum::http::StatusCode::OK, "ok\n".to_owned()),
                }
            }
        }
    };
    let (live, ready) = (check(true), check(false));
    let metrics = move || {
        let (shared, shipping) = (shared.clone(), shipping.clone());
        async move {
            (
                [(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                shared.metrics.render(&shared.archive, &shipping),
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(live))
        .route("/readyz", axum::routing::get(ready));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

/// Recompiles the policies and swaps them in; sessions keep running and pick the new policy
/// up with their next event. A policy set that does not compile is refused and the last good
/// one stays in force.
fn reload(shared: &Shared, args: &UpArgs, why: &str) {
    match compile(args) {
        Ok((policy, _)) => {
            let rules = policy.content_rule_count();
            shared.reload(policy);
            tracing::info!(target: "imgate::session", "policy {why}, reloaded ({rules} content rules)");
        }
        Err(error) => {
            tracing::error!(target: "imgate::session", "policy {why}, not reloaded, the last good one stays in force: {error:#}")
        }
    }
}

/// Reloads the policies on SIGHUP.
async fn reload_on_hangup(shared: Arc<Shared>, args: UpArgs) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangups.recv().await.is_some() {
        reload(&shared, &args, "signalled");
    }
}

pub async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
}
