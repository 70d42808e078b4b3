//! `imgate policy lint`: schema and semantic checks of every imgate resource in the files and
//! folders given, reported as `file:line: level: resource: field: message`.
//!
//! Invariants: every problem names a file and a line; a set with any error never yields
//! compiled policies (the same all-or-nothing rule the dataplane applies); documents that are
//! not imgate resources are counted and skipped, never silently misread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use imgate_crds::{IMPolicy, ResourceKind, Tenant, validate_object};
use imgate_dataplane::inspect::policy::{CompiledPolicy, Diagnostic};
use serde_json::Value;

use crate::manifest::{self, Document};

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The resource would be rejected or could not work.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File and line.
    pub file: PathBuf,
    /// 1-based line.
    pub line: u64,
    /// Error or warning.
    pub level: Level,
    /// `IMPolicy strict`, `Tenant acme`.
    pub subject: String,
    /// The field, when one is at fault.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{}:{}: {level}: {}: ",
            self.file.display(),
            self.line,
            self.subject
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything loaded from a set of files, with the problems found.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Tenants that passed validation.
    pub tenants: Vec<Tenant>,
    /// Policies that passed validation.
    pub policies: Vec<IMPolicy>,
    /// Compiled policy per tenant, when the tenant's policies compiled.
    pub compiled: BTreeMap<String, CompiledPolicy>,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
    /// Files read.
    pub files: usize,
    /// Documents that were not imgate resources.
    pub skipped: usize,
    policy_documents: HashMap<String, Document>,
}

impl Workspace {
    /// Loads, validates and compiles every imgate resource under `paths`.
    pub fn load(paths: &[PathBuf]) -> Self {
        let mut workspace = Self::default();
        let files = match manifest::collect_files(paths) {
            Ok(files) => files,
            Err(error) => {
                workspace.problems.push(Problem {
                    file: error.file,
                    line: 0,
                    level: Level::Error,
                    subject: "input".into(),
                    path: String::new(),
                    message: error.message,
                });
                return workspace;
            }
        };
        workspace.files = files.len();
        for file in &files {
            match manifest::load_file(file) {
                Ok(documents) => documents
                    .into_iter()
                    .for_each(|d| workspace.check_document(d)),
                Err(error) => workspace.problems.push(Problem {
                    file: error.file,
                    line: error.line.unwrap_or(1),
                    level: Level::Error,
                    subject: "file".into(),
                    path: String::new(),
                    message: error.message,
                }),
            }
        }
        workspace.check_references();
        workspace.compile();
        workspace
    }

    fn problem(
        &mut self,
        document: &Document,
        level: Level,
        path: &str,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            file: document.file.clone(),
            line: document.line_of(path),
            level,
            subject: document.describe(),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn check_document(&mut self, document: Document) {
        let api_version = document
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = document
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if api_version.is_empty() || kind.is_empty() {
            self.skipped += 1;
            if document.value.get("cases").is_some() {
                // A `imgate policy test` case file kept beside the policies.
                return;
            }
            self.problem(
                &document,
                Level::Warning,
                "",
                "skipped: not a Kubernetes object (no apiVersion and kind)",
            );
            return;
        }
        let Some(resource) = ResourceKind::of(&api_version, &kind) else {
            if api_version.starts_with(imgate_crds::GROUP) {
                self.problem(
                    &document,
                    Level::Error,
                    "kind",
                    format!(
                        "unknown kind {kind:?} in {}: expected Tenant or IMPolicy",
                        imgate_crds::GROUP
                    ),
                );
            } else {
                self.skipped += 1;
            }
            return;
        };
        if api_version != imgate_crds::API_VERSION {
            self.problem(
                &document,
                Level::Error,
                "apiVersion",
                format!(
                    "unknown version {api_version:?}: use {}",
                    imgate_crds::API_VERSION
                ),
            );
            return;
        }
        let errors = validate_object(resource, &document.value);
        for error in &errors {
            self.problem(&document, Level::Error, &error.path, error.message.clone());
        }
        if !errors.is_empty() {
            return;
        }
        match resource {
            ResourceKind::Tenant => {
                match serde_json::from_value::<Tenant>(document.value.clone()) {
                    Ok(tenant) => {
                        let networks = tenant
                            .spec
                            .destinations
                            .iter()
                            .flat_map(|d| &d.allow_networks);
                        for (i, network) in networks.enumerate() {
                            if let Err(why) =
                                imgate_dataplane::proxy::destination::Network::parse(network)
                            {
                                let path = format!("spec.destinations.allowNetworks[{i}]");
                                self.problem(&document, Level::Error, &path, why);
                            }
                        }
                        let destinations = tenant.spec.destinations.iter();
                        let domains = destinations.clone().flat_map(|d| &d.allow_domains);
                        for (i, domain) in domains.enumerate() {
                            let why = match imgate_dataplane::proxy::destination::Rule::parse(
                                domain,
                            ) {
                                Ok(imgate_dataplane::proxy::destination::Rule::Domain(_)) => {
                                    continue;
                                }
                                Ok(_) => format!(
                                    "{domain:?} is an address: allow it in allowNetworks, allowDomains holds domains"
                                ),
                                Err(why) => why,
                            };
                            let path = format!("spec.destinations.allowDomains[{i}]");
                            self.problem(&document, Level::Error, &path, why);
                        }
                        for (i, deny) in destinations.clone().flat_map(|d| &d.deny).enumerate() {
                            if let Err(why) =
                                imgate_dataplane::proxy::destination::Rule::parse(deny)
                            {
                                let path = format!("spec.destinations.deny[{i}]");
                                self.problem(&document, Level::Error, &path, why);
                            }
                        }
                        for (i, ports) in destinations.flat_map(|d| &d.ports).enumerate() {
                            if let Err(why) =
                                imgate_dataplane::proxy::destination::Ports::parse(ports)
                            {
                                let path = format!("spec.destinations.ports[{i}]");
                                self.problem(&document, Level::Error, &path, why);
                            }
                        }
                        for (path, why) in tenant
                            .spec
                            .alerts
                            .iter()
                            .flat_map(imgate_dataplane::alerts::config::check)
                        {
                            let path = format!("spec.alerts.{path}");
                            self.problem(&document, Level::Error, &path, why);
                        }
                        self.tenants.push(tenant);
                    }
                    Err(error) => self.problem(&document, Level::Error, "", error.to_string()),
                }
            }
            ResourceKind::IMPolicy => {
                match serde_json::from_value::<IMPolicy>(document.value.clone()) {
                    Ok(policy) => {
                        self.policy_documents.insert(policy_key(&policy), document);
                        self.policies.push(policy);
                    }
                    Err(error) => self.problem(&document, Level::Error, "", error.to_string()),
                }
            }
        }
    }

    fn check_references(&mut self) {
        let mut seen = BTreeSet::new();
        let duplicates: Vec<String> = self
            .tenants
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .filter(|n| !seen.insert(n.clone()))
            .collect();
        for name in duplicates {
            self.problems.push(Problem {
                file: PathBuf::new(),
                line: 0,
                level: Level::Error,
                subject: format!("Tenant {name}"),
                path: "metadata.name".into(),
                message: "defined more than once".into(),
            });
        }
        if self.tenants.is_empty() {
            return;
        }
        let orphans: Vec<(String, String)> = self
            .policies
            .iter()
            .filter(|p| !seen.contains(&p.spec.tenant_ref))
            .map(|p| (policy_key(p), p.spec.tenant_ref.clone()))
            .collect();
        for (key, tenant) in orphans {
            if let Some(document) = self.policy_documents.get(&key).cloned() {
                self.problem(
                    &document,
                    Level::Warning,
                    "spec.tenantRef",
                    format!("no Tenant {tenant:?} among the files given"),
                );
            }
        }
    }

    fn compile(&mut self) {
        let tenants: BTreeSet<String> = self
            .policies
            .iter()
            .map(|p| p.spec.tenant_ref.clone())
            .collect();
        for tenant in tenants {
            match CompiledPolicy::compile(&tenant, &self.policies) {
                Ok(compiled) => {
                    let warnings = compiled.warnings().to_vec();
                    warnings
                        .iter()
                        .for_each(|w| self.diagnostic(w, Level::Warning));
                    self.compiled.insert(tenant, compiled);
                }
                Err(error) => error
                    .0
                    .iter()
                    .for_each(|d| self.diagnostic(d, Level::Error)),
            }
        }
    }

    fn diagnostic(&mut self, diagnostic: &Diagnostic, level: Level) {
        match self.policy_documents.get(&diagnostic.policy).cloned() {
            Some(document) => self.problem(
                &document,
                level,
                &diagnostic.path,
                diagnostic.message.clone(),
            ),
            None => self.problems.push(Problem {
                file: PathBuf::new(),
                line: 0,
                level,
                subject: diagnostic.policy.clone(),
                path: diagnostic.path.clone(),
                message: diagnostic.message.clone(),
            }),
        }
    }

    /// The compiled policy of `tenant`, or of the only tenant when none is named.
    pub fn policy_for(&self, tenant: Option<&str>) -> Result<(&str, &CompiledPolicy), String> {
        let known = || self.compiled.keys().cloned().collect::<Vec<_>>().join(", ");
        let name = match (tenant, self.compiled.len()) {
            (Some(name), _) => name,
            (None, 1) => self
                .compiled
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or_default(),
            (None, 0) => return Err("no IMPolicy found in the files given".into()),
            (None, _) => {
                return Err(format!(
                    "the policies are for several tenants ({}): name one",
                    known()
                ));
            }
        };
        self.compiled
            .get_key_value(name)
            .map(|(name, policy)| (name.as_str(), policy))
            .ok_or_else(|| {
                format!(
                    "no policies for tenant {name:?}; tenants with policies: {}",
                    known()
                )
            })
    }

    /// Number of problems at `level`.
    pub fn count(&self, level: Level) -> usize {
        self.problems.iter().filter(|p| p.level == level).count()
    }

    /// Prints every problem and a summary.
    pub fn report(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut problems = self.problems.clone();
        problems.sort_by(|a, b| (&a.file, a.line, a.level).cmp(&(&b.file, b.line, b.level)));
        for problem in &problems {
            writeln!(out, "{problem}")?;
        }
        writeln!(
            out,
            "{} file(s), {} tenant(s), {} polic(ies), {} other document(s) skipped: {} error(s), {} warning(s)",
            self.files,
            self.tenants.len(),
            self.policies.len(),
            self.skipped,
            self.count(Level::Error),
            self.count(Level::Warning),
        )
    }
}

/// The key diagnostics use for a policy: `namespace/name`, or `name` without a namespace.
fn policy_key(policy: &IMPolicy) -> String {
    let name = policy.metadata.name.clone().unwrap_or_default();
    match &policy.metadata.namespace {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
        _ => name,
    }
}

/// Runs `imgate policy lint`; the exit code is 1 on errors (or warnings with `strict`).
pub fn run(paths: &[PathBuf], strict: bool) -> anyhow::Result<i32> {
    let workspace = Workspace::load(paths);
    workspace.report(&mut std::io::stdout().lock())?;
    let failed =
        workspace.count(Level::Error) > 0 || (strict && workspace.count(Level::Warning) > 0);
    Ok(i32::from(failed))
}
