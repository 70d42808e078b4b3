//! `IMPolicy`: what a tenant allows, blocks, redacts, archives and tells people. Namespaced;
//! several policies may apply to one sender, and `priority` orders them (the precedence is
//! documented in `docs/policy.md` and implemented by the dataplane's policy compiler).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired behaviour for a tenant's IM traffic, or for a subset of its people.
// Printer columns repeat `type_`; clippy mistakes them for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imgate.io",
    version = "v1alpha1",
    kind = "IMPolicy",
    plural = "impolicies",
    shortname = "imp",
    category = "imgate",
    namespaced,
    status = "IMPolicyStatus",
    derive = "PartialEq",
    cel,
    doc = "An IM security and compliance policy for one tenant",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantRef"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.rules",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.tenantRef",
    selectable = ".spec.mode"
)]
#[serde(rename_all = "camelCase")]
pub struct IMPolicySpec {
    /// Name of the Tenant this policy belongs to.
    #[schemars(regex(pattern = crate::NAME_PATTERN), length(min = 1, max = 40))]
    pub tenant_ref: String,
    /// `enforce` acts on verdicts; `monitor` (discovery) records what would have happened
    /// and changes nothing.
    #[serde(default)]
    pub mode: PolicyMode,
    /// Higher wins where policies disagree on a setting (0 to 10000).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
    /// Whom the policy applies to; everyone in the tenant when empty.
    #[serde(default)]
    pub subjects: Subjects,
    /// Which protocols and services may be used, and how TLS is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<ProtocolRules>,
    /// File transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_transfer: Option<FileTransferRules>,
    /// Content rules, evaluated on every message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub content: Vec<ContentRule>,
    /// URLs in messages and link offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<UrlRules>,
    /// A notice injected into conversations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclaimer: Option<Disclaimer>,
    /// A per-sender message rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// IM-worm containment: one URL or file fanned out to many people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worm: Option<WormContainment>,
    /// How long a quarantined sender stays blocked (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::units::DURATION_PATTERN))]
    pub quarantine_for: Option<String>,
}

/// `enforce` or `monitor`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Verdicts take effect.
    #[default]
    Enforce,
    /// Verdicts are recorded as what would have happened; nothing is changed.
    Monitor,
}

/// Whom a policy applies to. A sender matches when any list names them; an empty
/// `Subjects` matches everyone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subjects {
    /// People, as the directory names them (usually e-mail addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(length(min = 1, max = 512)))]
    pub people: Vec<String>,
    /// Directory groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 512)))]
    pub groups: Vec<String>,
    /// IM handles; `*` matches any run of characters (`*@chat.example`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(length(min = 1, max = 512)))]
    pub handles: Vec<String>,
}

impl Subjects {
    /// True when no list names anyone, so the policy applies to everyone.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty() && self.groups.is_empty() && self.handles.is_empty()
    }
}

/// Protocols the dataplane identifies.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// XMPP (Jabber).
    Xmpp,
    /// IRC.
    Irc,
    /// SIP (including SIP MESSAGE).
    Sip,
    /// Microsoft Messenger (MSNP).
    Msnp,
    /// AOL/ICQ OSCAR.
    Oscar,
    /// Yahoo! Messenger.
    Ymsg,
    /// Plain HTTP.
    Http,
    /// TLS that is not intercepted, to a service outside the catalogue.
    Tls,
    /// BitTorrent.
    Bittorrent,
    /// Anything not identified.
    Unknown,
}

impl Protocol {
    /// Every protocol, in declaration order.
    pub const ALL: [Protocol; 10] = [
        Protocol::Xmpp,
        Protocol::Irc,
        Protocol::Sip,
        Protocol::Msnp,
        Protocol::Oscar,
        Protocol::Ymsg,
        Protocol::Http,
        Protocol::Tls,
        Protocol::Bittorrent,
        Protocol::Unknown,
    ];

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Xmpp => "xmpp",
            Protocol::Irc => "irc",
            Protocol::Sip => "sip",
            Protocol::Msnp => "msnp",
            Protocol::Oscar => "oscar",
            Protocol::Ymsg => "ymsg",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Bittorrent => "bittorrent",
            Protocol::Unknown => "unknown",
        }
    }
}

/// Protocol and service rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.allow.all(p, !(p in self.block))").message("a protocol may not be both allowed and blocked"))]
pub struct ProtocolRules {
    /// Protocols this policy allows.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub allow: Vec<Protocol>,
    /// Protocols this policy blocks.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub block: Vec<Protocol>,
    /// What happens to protocols named in neither list; when absent, lower-priority
    /// policies decide (and in the end, they are allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Decision>,
    /// Services recognised by TLS server name (`slack`, `teams`, `whatsapp`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceRules>,
    /// Protocol features this policy blocks (`groupChat`, `fileTransfer`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub block_features: Vec<Feature>,
    /// How TLS is handled: `intercept`, `passthrough` or `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
}

/// Protocol features that policy can block on their own.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Feature {
    /// Rooms, channels, multi-user chat.
    GroupChat,
    /// Any file transfer.
    FileTransfer,
    /// Voice calls.
    Voice,
    /// Video calls.
    Video,
    /// Screen sharing.
    ScreenShare,
}

impl Feature {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::GroupChat => "groupChat",
            Feature::FileTransfer => "fileTransfer",
            Feature::Voice => "voice",
            Feature::Video => "video",
            Feature::ScreenShare => "screenShare",
        }
    }
}

/// Allow or block.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Stop it.
    Block,
}

/// Service (catalogue) rules.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.allow.all(s, !(s in self.block))").message("a service may not be both allowed and blocked"))]
pub struct ServiceRules {
    /// Services this policy allows.
    #[serde(default)]
    #[schemars(
        length(max = 256),
        inner(length(max = 63), regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))
    )]
    pub allow: Vec<String>,
    /// Services this policy blocks.
    #[serde(default)]
    #[schemars(
        length(max = 256),
        inner(length(max = 63), regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))
    )]
    pub block: Vec<String>,
}

/// TLS handling.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Terminate with a leaf from the tenant CA, inspect, and re-encrypt upstream.
    Intercept,
    /// Relay unread; session metadata is still archived.
    Passthrough,
    /// Refuse TLS.
    Block,
}

/// File-transfer rules.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileTransferRules {
    /// `allow` (subject to the limits below) or `block` every transfer.
    pub action: Decision,
    /// Largest file allowed, e.g. `10Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::units::SIZE_PATTERN))]
    pub max_size: Option<String>,
    /// File name extensions that are always blocked (`exe`, `js`, ...), case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = r"^[A-Za-z0-9_-]{1,16}$")))]
    pub block_extensions: Vec<String>,
    /// When given, only these extensions are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = r"^[A-Za-z0-9_-]{1,16}$")))]
    pub allow_extensions: Vec<String>,
    /// Scan allowed files for malware before delivery.
    #[serde(default)]
    pub scan: bool,
    /// What the sender is told when a transfer is blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// A content rule: a match and what to do about it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContentRule {
    /// The rule's name, recorded in the archive with every match.
    #[schemars(regex(pattern = crate::NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// What the rule looks for.
    #[serde(rename = "match")]
    pub matcher: ContentMatch,
    /// What happens on a match.
    pub action: ContentAction,
    /// Which directions the rule applies to; both when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub directions: Vec<Direction>,
    /// How serious a match is, for alerts.
    #[serde(default)]
    pub severity: Severity,
    /// What the sender is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Exactly one of `keywords`, `regex` or `detector`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.keywords), has(self.regex), has(self.detector)].filter(x, x).size() == 1").message("a match needs exactly one of keywords, regex or detector"))]
pub struct ContentMatch {
    /// Words or phrases; matched case-insensitively after normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50000), inner(length(min = 1, max = 256)))]
    pub keywords: Option<Vec<String>>,
    /// Keywords match whole words only (default true).
    #[serde(default = "default_true")]
    pub whole_word: bool,
    /// A regular expression (Rust `regex` syntax), matched against the original text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub regex: Option<String>,
    /// A built-in detector that validates what it finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<Detector>,
}

fn default_true() -> bool {
    true
}

/// Built-in detectors.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    /// Payment card numbers: known issuer ranges and lengths, Luhn checksum.
    CreditCard,
    /// IBANs: country length and mod-97 checksum.
    Iban,
    /// US social security numbers, excluding ranges never issued.
    UsSsn,
    /// PEM private keys.
    PrivateKey,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// GitHub tokens (`ghp_…`, `github_pat_…`).
    GithubToken,
    /// Slack tokens (`xoxb-…`, `xoxp-…`).
    SlackToken,
}

impl Detector {
    /// Every detector.
    pub const ALL: [Detector; 8] = [
        Detector::CreditCard,
        Detector::Iban,
        Detector::UsSsn,
        Detector::PrivateKey,
        Detector::AwsAccessKey,
        Detector::GoogleApiKey,
        Detector::GithubToken,
        Detector::SlackToken,
    ];
}

/// What a content match does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ContentAction {
    /// Deliver, and raise an alert.
    Alert,
    /// Deliver with the matched text masked.
    Redact,
    /// Do not deliver.
    Block,
    /// Do not deliver, and block the sender for `quarantineFor`.
    Quarantine,
}

/// Message direction relative to the firm.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the firm's user out to the IM server.
    Outbound,
    /// From the IM server to the firm's user.
    Inbound,
}

/// Alert severity.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    #[default]
    Medium,
    /// Needs attention.
    High,
    /// Needs attention now.
    Critical,
}

/// A notice to the sender; `{rule}` and `{policy}` are replaced.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Notify {
    /// Text sent back to the sender in the protocol's own way.
    #[schemars(length(min = 1, max = 1000))]
    pub sender: String,
}

/// URL rules.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UrlRules {
    /// Domains whose links are acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<DomainList>,
    /// Exceptions to `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<DomainList>,
    /// What a blocked link does to its message (default `block`).
    #[serde(default = "default_url_action")]
    pub action: ContentAction,
    /// What the sender is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

fn default_url_action() -> ContentAction {
    ContentAction::Block
}

/// Domain globs: `bad.example` matches that host, `*.bad.example` its subdomains.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DomainList {
    /// The globs.
    #[schemars(
        length(max = 10000),
        inner(regex(
            pattern = r"^(\*\.)?[A-Za-z0-9*]([A-Za-z0-9*-]*[A-Za-z0-9*])?(\.[A-Za-z0-9*]([A-Za-z0-9*-]*[A-Za-z0-9*])?)*$"
        ))
    )]
    pub domains: Vec<String>,
}

/// A disclaimer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disclaimer {
    /// The text.
    #[schemars(length(min = 1, max = 2000))]
    pub text: String,
    /// How often it is injected.
    #[serde(default)]
    pub once: DisclaimerFrequency,
}

/// Disclaimer frequency.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum DisclaimerFrequency {
    /// Once at the start of each conversation.
    #[default]
    PerConversation,
    /// Once per client session.
    PerSession,
}

/// A per-sender rate limit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Messages allowed per `per`.
    #[schemars(range(min = 1, max = 1000000))]
    pub messages: i32,
    /// The window, e.g. `1m`.
    #[schemars(regex(pattern = crate::units::DURATION_PATTERN))]
    pub per: String,
    /// What happens to messages over the limit (default `block`).
    #[serde(default = "default_rate_action")]
    pub action: ContentAction,
}

fn default_rate_action() -> ContentAction {
    ContentAction::Block
}

/// IM-worm containment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WormContainment {
    /// Distinct recipients of the same URL or file that trip the rule.
    #[schemars(range(min = 2, max = 100000))]
    pub distinct_recipients: i32,
    /// The window, e.g. `60s`.
    #[schemars(regex(pattern = crate::units::DURATION_PATTERN))]
    pub window: String,
    /// What happens to the sender (default `quarantine`).
    #[serde(default = "default_worm_action")]
    pub action: ContentAction,
}

fn default_worm_action() -> ContentAction {
    ContentAction::Quarantine
}

/// What the operator reports about a policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IMPolicyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (compiled) and `Enforced` (every dataplane runs it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::schema")]
    pub conditions: Vec<Condition>,
    /// Number of rules compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<i32>,
}
