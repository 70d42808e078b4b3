//! `imgate operator`: `run` is the operator itself ([`crate::operator_run`]); `render` prints every object the operator would make for the Tenants
//! and IMPolicies given, so that changes can be previewed and diffed in review; `check` proves
//! that the objects of a manifest (rendered charts, `render` output, hand-written YAML) are
//! the Kubernetes types they claim to be.
//!
//! Invariant: `render` uses the same desired-state functions and policy compiler as the
//! running operator, with the settings the Helm chart's defaults give unless told otherwise.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use imgate_operator::policy::PolicySet;
use imgate_operator::{Settings, desired, render};

use crate::policy::lint::{Level, Workspace};

/// What `imgate operator` does.
#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Print, as YAML, every object the operator would make for the Tenants in the files.
    Render(RenderArgs),
    /// Reconcile Tenants and IMPolicies on the cluster (in a pod, or with KUBECONFIG).
    Run(crate::operator_run::RunArgs),
    /// Check that every object in YAML files is the Kubernetes type it claims to be.
    Check {
        /// YAML files (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// The operator settings an MSP sets in the chart, shared by `render` and `run`.
#[derive(Args)]
pub struct SettingsArgs {
    /// The dataplane image.
    #[arg(long)]
    image: Option<String>,
    /// The MSP's DNS domain for tunnels (tenant `acme` is reached as `acme.DOMAIN`).
    #[arg(long)]
    tunnel_domain: Option<String>,
    /// `LoadBalancer` or `NodePort`.
    #[arg(long, value_parser = ["LoadBalancer", "NodePort"])]
    tunnel_service_type: Option<String>,
    /// Storage class of the write-ahead log volumes.
    #[arg(long)]
    storage_class: Option<String>,
    /// The namespace whose pods may scrape the dataplanes' metrics.
    #[arg(long)]
    metrics_namespace: Option<String>,
    /// A label a node must carry to run dataplanes, `KEY=VALUE` (repeat for several).
    #[arg(long = "node-selector", value_name = "KEY=VALUE", value_parser = key_value)]
    node_selector: Vec<(String, String)>,
    /// An annotation for every tunnel Service, `KEY=VALUE` (repeat for several).
    #[arg(long = "tunnel-service-annotation", value_name = "KEY=VALUE", value_parser = key_value)]
    tunnel_service_annotations: Vec<(String, String)>,
    /// A range holding the API server's endpoints, which dataplanes call to redeem enrollment
    /// tokens and follow their policy, e.g. `10.0.0.0/28` (repeat for several). `operator
    /// run` needs at least one: the dataplanes' network policy lets them reach TCP 443 and
    /// 6443 there and nowhere else in the cluster. Find the addresses with `kubectl get
    /// endpointslices -n default -l kubernetes.io/service-name=kubernetes`.
    #[arg(long = "api-server-cidr", value_name = "CIDR", value_parser = cidr)]
    api_server_cidrs: Vec<String>,
    /// The OTLP/HTTP endpoint every tenant's dataplanes export OpenTelemetry traces to, e.g.
    /// `http://otel-collector.monitoring:4318` (their network policy lets them reach its port).
    #[arg(long, value_name = "URL", value_parser = otlp_endpoint)]
    otlp_endpoint: Option<String>,
}

/// Checks that `text` is an OTLP/HTTP endpoint URL.
fn otlp_endpoint(text: &str) -> Result<String, String> {
    imgate_operator::settings::otlp_port(text).map(|_| text.to_owned())
}

/// Checks that `text` is an IPv4 or IPv6 CIDR range.
fn cidr(text: &str) -> Result<String, String> {
    if !text.contains('/') {
        return Err(format!(
            "`{text}` is not a CIDR range like 10.0.0.0/28 (a single address is ADDRESS/32)"
        ));
    }
    imgate_dataplane::proxy::destination::Network::parse(text).map(|_| text.to_owned())
}

/// Parses `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

impl SettingsArgs {
    /// Refuses settings without an API server range, which `operator run` needs.
    pub fn require_api_server(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.api_server_cidrs.is_empty(),
            "--api-server-cidr is required: the range holding the API server's endpoints, which the dataplanes' network policy lets them reach (and no other address in the cluster). List them with `kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes`, and give each as ADDRESS/32 (or /128), or a range that holds them all; the chart's value is dataplane.apiServerCIDRs"
        );
        Ok(())
    }

    /// The settings, with the chart's defaults for what is not given.
    pub fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            image: self.image.clone().unwrap_or(defaults.image),
            tunnel_domain: self.tunnel_domain.clone(),
            tunnel_service_type: self
                .tunnel_service_type
                .clone()
                .unwrap_or(defaults.tunnel_service_type),
            storage_class: self.storage_class.clone(),
            metrics_namespace: self
                .metrics_namespace
                .clone()
                .unwrap_or(defaults.metrics_namespace),
            node_selector: self.node_selector.iter().cloned().collect(),
            tunnel_service_annotations: self.tunnel_service_annotations.iter().cloned().collect(),
            api_server_cidrs: self.api_server_cidrs.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            ..defaults
        }
    }
}

/// Options of `imgate operator render`.
#[derive(Args)]
pub struct RenderArgs {
    /// Tenant and IMPolicy files, or folders of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Runs an operator subcommand; returns the exit code.
pub fn run(command: OperatorCommand) -> anyhow::Result<i32> {
    match command {
        OperatorCommand::Render(args) => render_command(&args),
        OperatorCommand::Check { files } => check_command(&files),
        OperatorCommand::Run(args) => crate::operator_run::run(&args),
    }
}

fn render_command(args: &RenderArgs) -> anyhow::Result<i32> {
    let workspace = Workspace::load(&args.paths);
    if workspace.count(Level::Error) > 0 {
        workspace.report(&mut std::io::stderr().lock())?;
    }
    anyhow::ensure!(
        !workspace.tenants.is_empty(),
        "no valid Tenant in the files given: render needs the Tenant and its IMPolicies"
    );
    let settings = args.settings.settings();
    if settings.api_server_cidrs.is_empty() {
        eprintln!(
            "note: without --api-server-cidr the dataplanes' network policy lets them reach no API server (the operator itself refuses to run without it)"
        );
    }
    let mut failed = workspace.count(Level::Error) > 0;
    for tenant in &workspace.tenants {
        let name = tenant.metadata.name.clone().unwrap_or_default();
        let policy = match PolicySet::build(&name, &workspace.policies) {
            Ok(set) => Some(set),
            Err(error) => {
                failed = true;
                eprintln!(
                    "tenant {name}: the policy set does not compile, so the operator would leave the dataplanes on their last good policy:"
                );
                for diagnostic in &error.0 {
                    eprintln!("  {diagnostic}");
                }
                None
            }
        };
        print!(
            "{}",
            render::yaml(&desired(tenant, policy.as_ref(), &settings))
        );
    }
    Ok(i32::from(failed))
}

fn check_command(files: &[PathBuf]) -> anyhow::Result<i32> {
    let mut failed = false;
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
        };
        match imgate_operator::check::check_yaml(&text) {
            Ok(count) => println!(
                "{}: {count} objects, each the type it claims to be, valid as the API server validates it",
                file.display()
            ),
            Err(problems) => {
                failed = true;
                for problem in problems {
                    println!("{}: {problem}", file.display());
                }
            }
        }
    }
    Ok(i32::from(failed))
}
