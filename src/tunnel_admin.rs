//! `imgate tunnel`: the tenant side of connector trust, run where the tenant's tunnel folder
//! is: `token` mints a one-time enrollment token, `sign` signs a certificate request made
//! offline (`imgate connector request`), and `revoke` shuts a connector out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use imgate_dataplane::tunnel::enroll::pem;
use imgate_dataplane::tunnel::tokens::TunnelState;
use imgate_dataplane::tunnel::trust::TunnelCa;

/// Where the tenant's tunnel folder is.
#[derive(Args)]
pub struct StateArgs {
    /// The tenant's tunnel folder (default: the data folder's `tunnel/`, as `imgate up` uses).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The dataplane's data folder.
    #[arg(long, default_value = "imgate-data")]
    data: PathBuf,
    /// The tenant.
    #[arg(long, default_value = "local")]
    tenant: String,
}

impl StateArgs {
    fn dir(&self) -> PathBuf {
        crate::up::tunnel_dir(&self.data, self.state.as_deref())
    }

    fn ca(&self) -> anyhow::Result<TunnelCa> {
        TunnelCa::load_or_generate(&self.dir(), &self.tenant).context("the tenant's tunnel CA")
    }
}

/// `imgate tunnel` subcommands.
#[derive(Subcommand)]
pub enum TunnelCommand {
    /// Mint a one-time token that enrolls a connector (`imgate connector enroll --token`).
    Token {
        /// The connector it enrolls.
        #[arg(long)]
        connector: String,
        /// How long it may be used, e.g. `24h`, `7d`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        valid: Duration,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Sign a connector's certificate request made with `imgate connector request`.
    Sign {
        /// The connector.
        #[arg(long)]
        connector: String,
        /// The connector's identity folder, holding its `request.pem`; `cert.pem` and
        /// `ca.pem` are written beside it.
        #[arg(long)]
        identity: PathBuf,
        /// How long the certificate is valid (days).
        #[arg(long, default_value_t = 30)]
        days: u64,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke a connector: its open connections close and it is never served again.
    Revoke {
        /// The connector.
        #[arg(long)]
        connector: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// Runs a tunnel subcommand.
pub fn run(command: TunnelCommand) -> anyhow::Result<i32> {
    match command {
        TunnelCommand::Token {
            connector,
            valid,
            state,
        } => {
            let ca = state.ca()?;
            let token = TunnelState::new(&state.dir()).mint(&connector, ca.certificate(), valid)?;
            eprintln!(
                "one-time token for connector {connector}, valid for {}; on the connector run:\n  imgate connector enroll --dataplane HOST:PORT --token TOKEN",
                humantime::format_duration(valid)
            );
            println!("{}", token.text());
            Ok(0)
        }
        TunnelCommand::Sign {
            connector,
            identity,
            days,
            state,
        } => {
            let ca = state.ca()?;
            let request = read(&identity.join("request.pem"))?;
            let cert = ca.sign_connector(&request, &connector, days)?;
            // The connector's newest certificate: one it had before stops working.
            imgate_dataplane::tunnel::generations::Generations::issued_offline(
                &state.dir(),
                &connector,
                &cert,
                imgate_dataplane::tunnel::tokens::unix_now(),
            )?;
            std::fs::write(identity.join("cert.pem"), pem(&cert))?;
            std::fs::write(identity.join("ca.pem"), pem(ca.certificate()))?;
            println!(
                "connector {connector} of tenant {} may connect for {days} days",
                state.tenant
            );
            Ok(0)
        }
        TunnelCommand::Revoke { connector, state } => {
            TunnelState::new(&state.dir()).revoke(&connector)?;
            println!(
                "connector {connector} is revoked; dataplanes using {} close its connections within a second",
                state.dir().display()
            );
            Ok(0)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (make it with imgate connector request)",
            path.display()
        )
    })
}
