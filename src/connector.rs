//! `imgate connector`: the program at a customer's site that carries its IM connections to
//! the tenant's dataplane through the tunnel, and the two steps that give it an identity:
//! `request` (on the connector: a key that never leaves it, and a certificate request) and
//! `sign` (where the tenant's tunnel CA is: the certificate for that request).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use imgate_dataplane::proxy::frontend::Frontend;
use imgate_dataplane::proxy::tls::write_private;
use imgate_dataplane::tunnel::connector::Connector;
use imgate_dataplane::tunnel::{endpoint, trust};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;

/// `imgate connector` subcommands.
#[derive(Subcommand)]
pub enum ConnectorCommand {
    /// Make this connector's key and a certificate request (`key.pem`, `request.pem`).
    Request {
        /// The connector's id.
        #[arg(long)]
        id: String,
        /// The connector's identity folder.
        #[arg(long, default_value = "imgate-connector")]
        identity: PathBuf,
    },
    /// Sign a connector's request with the tenant's tunnel CA (writes `cert.pem` and
    /// `ca.pem` beside the request).
    Sign {
        /// The connector's id.
        #[arg(long)]
        id: String,
        /// The connector's identity folder, holding its `request.pem`.
        #[arg(long, default_value = "imgate-connector")]
        identity: PathBuf,
        /// The dataplane's data folder, holding the tunnel CA (`tunnel/`).
        #[arg(long, default_value = "imgate-data")]
        data: PathBuf,
        /// The tenant.
        #[arg(long, default_value = "local")]
        tenant: String,
        /// How long the certificate is valid (days).
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// Carry local connections to the dataplane until Ctrl-C or SIGTERM.
    Run(RunArgs),
}

/// `imgate connector run` options.
#[derive(Args)]
pub struct RunArgs {
    /// The connector's id (as in its certificate).
    #[arg(long)]
    id: String,
    /// The connector's identity folder (`key.pem`, `cert.pem`, `ca.pem`).
    #[arg(long, default_value = "imgate-connector")]
    identity: PathBuf,
    /// A dataplane's tunnel address, `HOST:PORT` on UDP (repeat for several, tried in order).
    #[arg(long = "dataplane", required = true)]
    dataplanes: Vec<SocketAddr>,
    /// The name in the dataplanes' certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// SOCKS5 listener (`off` for none).
    #[arg(long, default_value = "127.0.0.1:1080")]
    socks: String,
    /// HTTP CONNECT listener (`off` for none).
    #[arg(long, default_value = "off")]
    http: String,
    /// A fixed port-forward, `LISTEN=HOST:PORT` (repeat for several).
    #[arg(long = "forward", value_name = "LISTEN=HOST:PORT")]
    forwards: Vec<String>,
}

/// Runs a connector subcommand.
pub fn run(command: ConnectorCommand) -> anyhow::Result<i32> {
    match command {
        ConnectorCommand::Request { id, identity } => {
            std::fs::create_dir_all(&identity)
                .with_context(|| format!("cannot create {}", identity.display()))?;
            let (key, request) = trust::connector_request(&id)?;
            let key_path = identity.join("key.pem");
            write_private(&key_path, key.serialize_pem().as_bytes()).with_context(|| {
                format!(
                    "cannot create {} (does it exist already?)",
                    key_path.display()
                )
            })?;
            std::fs::write(identity.join("request.pem"), request)?;
            println!(
                "wrote {} and {}; have the request signed (imgate connector sign), then run the connector",
                key_path.display(),
                identity.join("request.pem").display()
            );
            Ok(0)
        }
        ConnectorCommand::Sign {
            id,
            identity,
            data,
            tenant,
            days,
        } => {
            let ca = trust::TunnelCa::load_or_generate(&data.join("tunnel"), &tenant)
                .context("the tenant's tunnel CA")?;
            let request_path = identity.join("request.pem");
            let request = std::fs::read_to_string(&request_path).with_context(|| {
                format!(
                    "cannot read {} (make it with imgate connector request)",
                    request_path.display()
                )
            })?;
            let cert = ca.sign_connector(&request, &id, days)?;
            std::fs::write(identity.join("cert.pem"), pem(&cert))?;
            std::fs::write(identity.join("ca.pem"), pem(ca.certificate()))?;
            println!("connector {id} of tenant {tenant} may connect for {days} days");
            Ok(0)
        }
        ConnectorCommand::Run(args) => serve(args),
    }
}

fn pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// The connector's QUIC client endpoint, from its identity folder.
fn client_endpoint(identity: &Path) -> anyhow::Result<quinn::Endpoint> {
    let read = |name: &str| {
        let path = identity.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (imgate connector request, then sign)",
                path.display()
            )
        })
    };
    let key_pem = String::from_utf8(read("key.pem")?)?;
    let key = rcgen::KeyPair::from_pem(&key_pem).context("key.pem")?;
    let cert = CertificateDer::from_pem_slice(&read("cert.pem")?).context("cert.pem")?;
    let ca = CertificateDer::from_pem_slice(&read("ca.pem")?).context("ca.pem")?;
    let tls = trust::connector_config(&ca, trust::connector_identity(&key, cert)?)?;
    let mut endpoint = quinn::Endpoint::client("[::]:0".parse()?)
        .or_else(|_| quinn::Endpoint::client("0.0.0.0:0".parse().expect("address")))
        .context("cannot open a UDP socket for the tunnel")?;
    endpoint.set_default_client_config(endpoint::client(tls)?);
    Ok(endpoint)
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

fn serve(args: RunArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let endpoint = client_endpoint(&args.identity)?;
        let dataplanes = args
            .dataplanes
            .iter()
            .map(|address| (*address, args.server_name.clone()))
            .collect();
        let connector = Arc::new(Connector::new(&args.id, endpoint, dataplanes));
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
            let port: u16 = port.parse().with_context(|| format!("{port:?} is not a port"))?;
            let frontend = Frontend::Forward {
                host: host.to_owned(),
                port,
            };
            listeners.extend(listen(local, frontend).await?);
        }
        anyhow::ensure!(!listeners.is_empty(), "nothing to listen on: give --socks, --http or --forward");
        println!("imgate connector {} is up", args.id);
        for (listener, _) in &listeners {
            println!("  listening on {}", listener.local_addr()?);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (listener, frontend) in listeners {
            let connector = connector.clone();
            tasks.spawn(async move {
                loop {
                    let (client, peer) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = client.set_nodelay(true);
                    let serving = connector.clone().serve(frontend.clone(), client, peer);
                    tokio::spawn(async move {
                        if let Err(error) = serving.await {
                            tracing::info!(target: "imgate::tunnel", %peer, "connection ended: {error}");
                        }
                    });
                }
            });
        }
        crate::up::shutdown_signal().await;
        tasks.abort_all();
        Ok(0)
    })
}
