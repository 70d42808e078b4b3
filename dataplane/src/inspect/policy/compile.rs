//! The policy compiler: a tenant's IMPolicy specs in, one immutable [`CompiledPolicy`] out,
//! or every problem found with the field it concerns.
//!
//! Invariants: compilation is all-or-nothing (a policy set with any error produces no
//! compiled policy, so the dataplane keeps enforcing the last good one); policies are
//! ordered by precedence once, here; every rule gets its archive name `policy/rule` here.

use std::collections::HashSet;
use std::sync::Arc;

use imgate_crds::policy::{
    ContentAction, ContentRule, Decision, Detector, Direction, Feature, IMPolicy, IMPolicySpec,
    PolicyMode, Protocol, Severity, TlsMode,
};
use imgate_crds::units::{parse_duration, parse_size};

use super::detectors::Detectors;
use super::keywords::{KeywordBuilder, KeywordIndex, RuleId};
use super::patterns::{self, PatternIndex};
use super::subjects::SubjectMatcher;
use super::tracker::{FanoutSpec, RateSpec};
use super::urls::{DomainSet, UrlFinder};
use super::verdict::{Action, Disclaimer};
use crate::inspect::event::Party;

/// Most policies one tenant may have.
pub const MAX_POLICIES: usize = 64;
/// Quarantine length when a policy does not say.
pub const DEFAULT_QUARANTINE_MS: u64 = 3_600_000;
/// Rule names reserved for a policy's own sections.
pub const SECTION_RULES: [&str; 7] = [
    "protocols",
    "services",
    "features",
    "file-transfer",
    "urls",
    "rate-limit",
    "worm",
];

/// A problem found while compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The field, as `spec.content[2].match.regex`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.policy, self.path, self.message)
    }
}

/// The policy set failed to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the policy set, first: {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
pub struct CompileError(pub Vec<Diagnostic>);

/// One policy's sections, compiled.
#[derive(Debug, Clone)]
pub(crate) struct PolicyEntry {
    pub name: Arc<str>,
    pub mode: PolicyMode,
    pub priority: i32,
    pub subjects: SubjectMatcher,
    pub protocols: Option<ProtocolSettings>,
    pub file: Option<FileSettings>,
    pub urls: Option<UrlSettings>,
    pub disclaimer: Option<Disclaimer>,
    pub rate: Option<(RateSpec, Action, Arc<str>)>,
    pub worm: Option<(FanoutSpec, Action, Arc<str>)>,
    pub quarantine_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ProtocolSettings {
    pub allow: Vec<Protocol>,
    pub block: Vec<Protocol>,
    pub default: Option<Decision>,
    pub services_allow: HashSet<String>,
    pub services_block: HashSet<String>,
    pub block_features: Vec<Feature>,
    pub tls: Option<TlsMode>,
    pub rule: Arc<str>,
    pub services_rule: Arc<str>,
    pub features_rule: Arc<str>,
}

#[derive(Debug, Clone)]
pub(crate) struct FileSettings {
    pub action: Decision,
    pub max_size: Option<u64>,
    pub block_extensions: HashSet<String>,
    pub allow_extensions: HashSet<String>,
    pub scan: bool,
    pub notify: Option<String>,
    pub rule: Arc<str>,
}

#[derive(Debug, Clone)]
pub(crate) struct UrlSettings {
    pub block: Option<DomainSet>,
    pub allow: Option<DomainSet>,
    pub action: Action,
    pub notify: Option<String>,
    pub rule: Arc<str>,
}

/// One content rule.
#[derive(Debug, Clone)]
pub(crate) struct ContentEntry {
    pub policy: usize,
    pub name: Arc<str>,
    pub action: Action,
    pub directions: Vec<Direction>,
    pub severity: Severity,
    pub notify: Option<String>,
}

/// A tenant's policies compiled into one immutable, shareable matcher (wrap it in an `Arc`).
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) tenant: String,
    pub(crate) policies: Vec<PolicyEntry>,
    pub(crate) content: Vec<ContentEntry>,
    pub(crate) keywords: KeywordIndex,
    pub(crate) patterns: PatternIndex,
    pub(crate) detectors: Detectors,
    pub(crate) detector_rules: Vec<(Detector, RuleId)>,
    pub(crate) urls: UrlFinder,
    pub(crate) needs_urls: bool,
    warnings: Vec<Diagnostic>,
}

/// Maps a content action to what it does to the event.
pub(crate) fn action_of(action: ContentAction) -> Action {
    match action {
        ContentAction::Alert => Action::Allow,
        ContentAction::Redact => Action::Redact,
        ContentAction::Block => Action::Block,
        ContentAction::Quarantine => Action::Quarantine,
    }
}

struct Compiler {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    policy: String,
}

impl Compiler {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            policy: self.policy.clone(),
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            policy: self.policy.clone(),
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration_ms(&mut self, path: &str, text: &str) -> u64 {
        match parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.error(path, "must be longer than zero");
                0
            }
            Ok(duration) => u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            Err(error) => {
                self.error(path, error.to_string());
                0
            }
        }
    }
}

impl CompiledPolicy {
    /// Compiles the policies of `tenant` (policies of other tenants are ignored).
    pub fn compile(tenant: &str, policies: &[IMPolicy]) -> Result<Self, CompileError> {
        let mut selected: Vec<(String, String, &IMPolicySpec)> = policies
            .iter()
            .filter(|p| p.spec.tenant_ref == tenant)
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                    &p.spec,
                )
            })
            .collect();
        // Precedence: higher priority first, then namespace and name, so ties are predictable.
        selected.sort_by(|a, b| {
            b.2.priority
                .cmp(&a.2.priority)
                .then_with(|| a.0.cmp(&b.0))
                .then_with(|| a.1.cmp(&b.1))
        });

        let mut compiler = Compiler {
            errors: Vec::new(),
            warnings: Vec::new(),
            policy: String::new(),
        };
        if selected.len() > MAX_POLICIES {
            compiler.policy = tenant.to_owned();
            compiler.error("", format!("tenant {tenant} has {} policies; at most {MAX_POLICIES} are supported: merge some", selected.len()));
        }
        let mut seen_names = HashSet::new();
        let mut keywords = KeywordBuilder::default();
        let mut regexes = Vec::new();
        let mut detector_rules = Vec::new();
        let mut content = Vec::new();
        let mut entries = Vec::new();
        for (index, (namespace, name, spec)) in selected.iter().enumerate() {
            compiler.policy = if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            };
            if !seen_names.insert(name.clone()) {
                compiler.error("metadata.name", format!("another policy of tenant {tenant} is also named {name:?}; rule names in the archive would be ambiguous: rename one"));
            }
            let entry = compile_sections(&mut compiler, name, spec);
            for (position, rule) in spec.content.iter().enumerate() {
                let id = content.len() as RuleId;
                let path = format!("spec.content[{position}]");
                compile_content_rule(
                    &mut compiler,
                    &path,
                    rule,
                    id,
                    &mut keywords,
                    &mut regexes,
                    &mut detector_rules,
                );
                if SECTION_RULES.contains(&rule.name.as_str()) {
                    compiler.error(
                        format!("{path}.name"),
                        format!(
                            "{:?} is reserved for the policy's own {} section: choose another name",
                            rule.name, rule.name
                        ),
                    );
                }
                if spec.content[..position].iter().any(|r| r.name == rule.name) {
                    compiler.error(
                        format!("{path}.name"),
                        format!(
                            "another content rule of this policy is also named {:?}",
                            rule.name
                        ),
                    );
                }
                content.push(ContentEntry {
                    policy: index,
                    name: format!("{name}/{}", rule.name).into(),
                    action: action_of(rule.action),
                    directions: rule.directions.clone(),
                    severity: rule.severity,
                    notify: rule.notify.as_ref().map(|n| n.sender.clone()),
                });
            }
            if let Some(entry) = entry {
                entries.push(entry);
            }
        }
        // What nobody could identify is relayed unread, with only its session archived: that
        // must be a tenant's decision, not an oversight.
        let decides_unknown = selected.iter().any(|(_, _, spec)| {
            spec.protocols.as_ref().is_some_and(|p| {
                p.default.is_some()
                    || p.allow.contains(&Protocol::Unknown)
                    || p.block.contains(&Protocol::Unknown)
            })
        });
        if let (false, Some((namespace, name, _))) = (decides_unknown, selected.first()) {
            compiler.policy = if namespace.is_empty() {
                name.clone()
            } else {
                format!("{namespace}/{name}")
            };
            compiler.warn(
                "spec.protocols",
                format!("no policy of tenant {tenant} decides on traffic imgate cannot identify (protocol unknown), which is then relayed unread with only its session archived: block it (protocols.block: [unknown]), or allow it explicitly"),
            );
        }
        let keywords = keywords.build().map_err(|e| {
            compiler.policy = tenant.to_owned();
            compiler.error("spec.content", e.to_string());
        });
        let patterns = PatternIndex::new(regexes).map_err(|e| {
            compiler.policy = tenant.to_owned();
            compiler.error("spec.content", e.to_string());
        });
        match (keywords, patterns) {
            (Ok(keywords), Ok(patterns)) if compiler.errors.is_empty() => {
                let needs_urls = entries.iter().any(|p| p.urls.is_some() || p.worm.is_some());
                Ok(Self {
                    tenant: tenant.to_owned(),
                    detectors: Detectors::new(detector_rules.iter().map(|(d, _)| *d)),
                    detector_rules,
                    policies: entries,
                    content,
                    keywords,
                    patterns,
                    urls: UrlFinder::default(),
                    needs_urls,
                    warnings: compiler.warnings,
                })
            }
            _ => Err(CompileError(compiler.errors)),
        }
    }

    /// The tenant this policy is for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Policy names in precedence order.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| &*p.name)
    }

    /// Each policy's name, priority and mode, in precedence order.
    pub fn policy_summaries(&self) -> impl Iterator<Item = (&str, i32, PolicyMode)> {
        self.policies.iter().map(|p| (&*p.name, p.priority, p.mode))
    }

    /// The policies whose subjects match `sender`, in precedence order.
    pub fn applicable_to(&self, sender: &Party) -> Vec<&str> {
        self.policies
            .iter()
            .filter(|p| p.subjects.matches(sender))
            .map(|p| &*p.name)
            .collect()
    }

    /// Number of content rules.
    pub fn content_rule_count(&self) -> usize {
        self.content.len()
    }

    /// Things that compile but are probably not what the author meant.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

fn compile_sections(
    compiler: &mut Compiler,
    name: &str,
    spec: &IMPolicySpec,
) -> Option<PolicyEntry> {
    let rule = |section: &str| -> Arc<str> { format!("{name}/{section}").into() };
    let subjects = match SubjectMatcher::new(&spec.subjects) {
        Ok(subjects) => subjects,
        Err((index, error)) => {
            compiler.error(
                format!("spec.subjects.handles[{index}]"),
                format!("invalid handle pattern: {error}"),
            );
            return None;
        }
    };
    let protocols = spec.protocols.as_ref().map(|p| {
        for (index, protocol) in p.allow.iter().enumerate() {
            if p.block.contains(protocol) {
                compiler.error(
                    format!("spec.protocols.allow[{index}]"),
                    format!("{} is both allowed and blocked", protocol.as_str()),
                );
            }
        }
        if p.tls == Some(TlsMode::Block) && p.allow.contains(&Protocol::Tls) {
            compiler.warn(
                "spec.protocols.tls",
                "tls: block refuses every TLS session, so allowing the tls protocol has no effect",
            );
        }
        let services = p.services.clone().unwrap_or_default();
        ProtocolSettings {
            allow: p.allow.clone(),
            block: p.block.clone(),
            default: p.default,
            services_allow: services.allow.into_iter().collect(),
            services_block: services.block.into_iter().collect(),
            block_features: p.block_features.clone(),
            tls: p.tls,
            rule: rule("protocols"),
            services_rule: rule("services"),
            features_rule: rule("features"),
        }
    });
    let file = spec.file_transfer.as_ref().map(|f| {
        let max_size = f.max_size.as_deref().and_then(|text| match parse_size(text) {
            Ok(size) => Some(size),
            Err(error) => {
                compiler.error("spec.fileTransfer.maxSize", error.to_string());
                None
            }
        });
        if f.action == Decision::Block && (max_size.is_some() || !f.allow_extensions.is_empty() || !f.block_extensions.is_empty() || f.scan) {
            compiler.warn("spec.fileTransfer", "action: block refuses every transfer, so the size, extension and scan settings never apply");
        }
        let lower = |list: &[String]| list.iter().map(|e| e.trim_start_matches('.').to_ascii_lowercase()).collect::<HashSet<_>>();
        FileSettings {
            action: f.action,
            max_size,
            block_extensions: lower(&f.block_extensions),
            allow_extensions: lower(&f.allow_extensions),
            scan: f.scan,
            notify: f.notify.as_ref().map(|n| n.sender.clone()),
            rule: rule("file-transfer"),
        }
    });
    let urls = spec.urls.as_ref().map(|u| {
        let mut domains = |list: &Option<imgate_crds::policy::DomainList>, field: &str| {
            list.as_ref()
                .and_then(|l| match DomainSet::new(&l.domains) {
                    Ok(set) => Some(set),
                    Err((glob, error)) => {
                        compiler.error(
                            format!("spec.urls.{field}.domains"),
                            format!("invalid domain glob {glob:?}: {error}"),
                        );
                        None
                    }
                })
        };
        let block = domains(&u.block, "block");
        let allow = domains(&u.allow, "allow");
        if u.block.as_ref().is_none_or(|b| b.domains.is_empty()) {
            compiler.warn(
                "spec.urls",
                "no domains under urls.block, so the URL rule never matches",
            );
        }
        UrlSettings {
            block,
            allow,
            action: action_of(u.action),
            notify: u.notify.as_ref().map(|n| n.sender.clone()),
            rule: rule("urls"),
        }
    });
    let rate = spec.rate_limit.as_ref().map(|r| {
        let per_ms = compiler.duration_ms("spec.rateLimit.per", &r.per);
        (
            RateSpec {
                messages: r.messages.max(1) as u32,
                per_ms,
            },
            action_of(r.action),
            rule("rate-limit"),
        )
    });
    let worm = spec.worm.as_ref().map(|w| {
        let window_ms = compiler.duration_ms("spec.worm.window", &w.window);
        (
            FanoutSpec {
                distinct: w.distinct_recipients.max(1) as u32,
                window_ms,
            },
            action_of(w.action),
            rule("worm"),
        )
    });
    let quarantine_ms = match spec.quarantine_for.as_deref() {
        Some(text) => compiler.duration_ms("spec.quarantineFor", text),
        None => DEFAULT_QUARANTINE_MS,
    };
    if spec.mode == PolicyMode::Monitor && spec.disclaimer.is_some() {
        compiler.warn(
            "spec.disclaimer",
            "a monitor-mode policy changes nothing, so its disclaimer is never injected",
        );
    }
    Some(PolicyEntry {
        name: name.into(),
        mode: spec.mode,
        priority: spec.priority,
        subjects,
        protocols,
        file,
        urls,
        disclaimer: spec.disclaimer.as_ref().map(|d| Disclaimer {
            text: d.text.as_str().into(),
            once: d.once,
        }),
        rate,
        worm,
        quarantine_ms,
    })
}

fn compile_content_rule(
    compiler: &mut Compiler,
    path: &str,
    rule: &ContentRule,
    id: RuleId,
    keywords: &mut KeywordBuilder,
    regexes: &mut Vec<(RuleId, regex::Regex)>,
    detectors: &mut Vec<(Detector, RuleId)>,
) {
    let matcher = &rule.matcher;
    let given = [
        matcher.keywords.is_some(),
        matcher.regex.is_some(),
        matcher.detector.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        compiler.error(
            format!("{path}.match"),
            "a match needs exactly one of keywords, regex or detector",
        );
        return;
    }
    if let Some(list) = &matcher.keywords {
        if list.is_empty() {
            compiler.error(
                format!("{path}.match.keywords"),
                "the keyword list is empty, so the rule can never match",
            );
        }
        for (index, keyword) in list.iter().enumerate() {
            if let Err(error) = keywords.add(id, keyword, matcher.whole_word) {
                compiler.error(format!("{path}.match.keywords[{index}]"), error.to_string());
            }
        }
    }
    if let Some(pattern) = &matcher.regex {
        match patterns::compile(pattern) {
            Ok(regex) => regexes.push((id, regex)),
            Err(error) => compiler.error(format!("{path}.match.regex"), error.to_string()),
        }
    }
    if let Some(detector) = matcher.detector {
        detectors.push((detector, id));
    }
}
