//! `imgate`: one binary for every part of imgate. Each subcommand is a thin shell over the
//! library crates; exit codes: 0 success, 1 the check or test failed, 2 the command could
//! not run (bad arguments, unreadable files).
#![forbid(unsafe_code)]

mod archive;
mod connector;
mod connector_health;
mod manifest;
mod operator;
mod operator_run;
mod policy;
mod policy_watch;
mod traces;
mod tunnel_admin;
mod up;
mod up_alerts;
mod up_follow;
mod up_identity;
mod up_report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use imgate_crds::policy::{Direction, Protocol};
use serde::de::DeserializeOwned;

use policy::event_spec::{EventSpec, FileSpec, PartySpec};

/// imgate: IM security and compliance archiving for Kubernetes.
#[derive(Parser)]
#[command(name = "imgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check, test and explain IMPolicy and Tenant manifests before they are applied.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run a dataplane on this machine with embedded defaults (SOCKS5, HTTP CONNECT, a local archive).
    Up(Box<up::UpArgs>),
    /// The connector that carries a site's IM connections to its dataplane through the tunnel.
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
    /// Enrollment tokens, offline signing and revocation of a tenant's connectors.
    #[command(subcommand)]
    Tunnel(tunnel_admin::TunnelCommand),
    /// Print the imgate CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
    /// Preview what the operator makes for Tenants and IMPolicies, and check manifests.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// List, verify, search, show, export and hold a tenant's compliance archive.
    Archive {
        #[command(flatten)]
        store: Box<archive::StoreArgs>,
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check every imgate resource in the files and folders given.
    Lint {
        /// YAML files, or folders searched for *.yaml and *.yml.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Fail on warnings too.
        #[arg(long)]
        strict: bool,
    },
    /// Run YAML test cases against the policies in a folder.
    Test {
        /// Folder (or file) with the IMPolicy manifests.
        policy_dir: PathBuf,
        /// Test case files, or folders of them.
        #[arg(required = true)]
        cases: Vec<PathBuf>,
        /// Also write a JUnit XML report here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Show which rules one message matches, where, and why the verdict is what it is.
    Explain(Box<ExplainArgs>),
}

#[derive(Args)]
struct ExplainArgs {
    /// Policy files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The message text.
    #[arg(long, short = 'm', conflicts_with_all = ["file_name", "session"])]
    text: Option<String>,
    /// Explain a file offer with this name instead of a message.
    #[arg(long)]
    file_name: Option<String>,
    /// Size of the offered file in bytes.
    #[arg(long, requires = "file_name")]
    file_size: Option<u64>,
    /// Explain a session start (protocol, service and TLS decisions).
    #[arg(long)]
    session: bool,
    /// The tenant, when the policies are for several.
    #[arg(long)]
    tenant: Option<String>,
    /// The sender's handle.
    #[arg(long, default_value = "user@chat.example")]
    handle: String,
    /// The person the handle belongs to.
    #[arg(long)]
    person: Option<String>,
    /// A directory group of the sender (repeat for several).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// The protocol.
    #[arg(long, default_value = "xmpp", value_parser = parse_name::<Protocol>)]
    protocol: Protocol,
    /// A catalogue service recognised by TLS server name.
    #[arg(long)]
    service: Option<String>,
    /// outbound or inbound.
    #[arg(long, default_value = "outbound", value_parser = parse_name::<Direction>)]
    direction: Direction,
    /// A recipient handle (repeat for several).
    #[arg(long = "recipient")]
    recipients: Vec<String>,
    /// The room, for a group message.
    #[arg(long)]
    room: Option<String>,
    /// Print the verdict as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses a manifest name (`xmpp`, `outbound`) into its enum.
fn parse_name<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| e.to_string())
}

/// Logs when `RUST_LOG` says nothing: sessions and warnings always; each message, presence
/// and verdict (`imgate::message`, which names people and quotes their text) only on a
/// terminal, as the live view of `imgate up`. Collected logs thus never copy conversations
/// out of the archive, and a busy dataplane does not write a log line per message.
fn default_log_filter() -> &'static str {
    if std::io::stderr().is_terminal() {
        "imgate::session=info,imgate::tunnel=info,imgate::message=info,warn"
    } else {
        "imgate::session=info,imgate::tunnel=info,warn"
    }
}

fn main() -> ExitCode {
    // What imgate writes (the archive log and segments, CA keys, tokens, state) is its user's
    // alone, whatever the umask it was started with: files 0600, folders 0700.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let traces = start_logging(cli.command.service());
    let code = match run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) if closed_pipe(&error) => ExitCode::from(141),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    };
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// Whether `error` is standard output closed by its reader (`imgate archive search | head`):
/// the command ends quietly, with the status a shell reports for a process ended by SIGPIPE
/// (128 + 13), as Unix tools do.
fn closed_pipe(error: &anyhow::Error) -> bool {
    error.downcast_ref::<archive::StdoutClosed>().is_some()
}

/// Logs to stderr as `RUST_LOG` (or [`default_log_filter`]) says; for a long-running
/// `service`, also exports traces when an OTLP endpoint is configured ([`traces`]).
fn start_logging(service: Option<&str>) -> Option<traces::Traces> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_log_filter()));
    let stderr = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let exporting = service
        .filter(|_| traces::wanted())
        .map(traces::layer::<tracing_subscriber::Registry>);
    let (layer, traces, failed) = match exporting {
        Some(Ok((layer, traces))) => (Some(layer), Some(traces), None),
        Some(Err(error)) => (None, None, Some(error)),
        None => (None, None, None),
    };
    tracing_subscriber::registry()
        .with(layer)
        .with(stderr)
        .init();
    if let Some(error) = failed {
        tracing::error!("{error:#}; running without traces");
    }
    traces
}

impl Command {
    /// The OpenTelemetry service name of a long-running command.
    fn service(&self) -> Option<&'static str> {
        match self {
            Self::Up(_) => Some("imgate-dataplane"),
            Self::Operator(_) => Some("imgate-operator"),
            Self::Connector(_) => Some("imgate-connector"),
            _ => None,
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Crds => {
            for crd in imgate_crds::crds() {
                print!("---\n{}", imgate_crds::crd_yaml(&crd));
            }
            Ok(0)
        }
        Command::Archive { store, command } => archive::run(&store, command),
        Command::Up(args) => up::run(*args),
        Command::Connector(command) => connector::run(command),
        Command::Tunnel(command) => tunnel_admin::run(command),
        Command::Operator(command) => operator::run(command),
        Command::Policy(PolicyCommand::Lint { paths, strict }) => policy::lint::run(&paths, strict),
        Command::Policy(PolicyCommand::Test {
            policy_dir,
            cases,
            junit,
        }) => policy::test_cases::run(&policy_dir, &cases, junit.as_deref()),
        Command::Policy(PolicyCommand::Explain(args)) => {
            let args = *args;
            let event = EventSpec {
                protocol: Some(args.protocol),
                service: args.service,
                direction: Some(args.direction),
                sender: Some(PartySpec {
                    handle: Some(args.handle),
                    person: args.person,
                    groups: Some(args.groups),
                }),
                recipients: Some(args.recipients),
                room: args.room,
                text: args.text,
                file: args.file_name.map(|name| FileSpec {
                    name,
                    size: args.file_size,
                    sha256: None,
                }),
                feature: None,
                session: args.session.then_some(true),
                urls: None,
                at: None,
            };
            policy::explain::run(policy::explain::Request {
                paths: args.paths,
                tenant: args.tenant,
                event,
                json: args.json,
            })
        }
    }
}
