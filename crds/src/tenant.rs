//! `Tenant`: one customer firm. Cluster-scoped; the operator gives each tenant a namespace of
//! its own holding its dataplanes, tunnel endpoint, secrets and policies.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest tenant name: it prefixes the tenant's namespace (`imgate-NAME`) and the names
/// of its objects, which must stay valid DNS labels.
pub const TENANT_NAME_MAX: usize = 40;

/// The desired state of one customer firm.
// Printer columns repeat `type_`; clippy mistakes them for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "imgate.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "imt",
    category = "imgate",
    status = "TenantStatus",
    derive = "PartialEq",
    cel,
    doc = "A customer firm whose IM traffic imgate inspects and archives",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Connectors",
        type_ = "integer",
        json_path = ".status.connectors"
    ),
    printcolumn(
        name = "Sessions",
        type_ = "integer",
        json_path = ".status.activeSessions"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".status.policyRevision",
        priority = 1
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.tunnelEndpoint",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The firm's name as shown to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// How many dataplane pods run and when they scale.
    #[serde(default)]
    pub dataplane: DataplaneSpec,
    /// Where and how every conversation is archived.
    pub archive: ArchiveSpec,
    /// How IM handles are resolved to people and groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,
    /// TLS interception settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Where the firm's IM sessions may go beyond the public internet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<DestinationsSpec>,
    /// The connectors at the firm's sites: which one the next enrollment token is for, and
    /// which are revoked.
    #[serde(default)]
    pub tunnel: TunnelSpec,
    /// Where alerts go (Alertmanager, a webhook, a SIEM over syslog, e-mail) and how hits
    /// are grouped; none are sent when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::alerts::AlertsSpec>,
}

/// The tenant's connectors.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSpec {
    /// The connector the one-time token in Secret `connector-enrollment` enrolls. To enroll
    /// another connector, name it here and delete that Secret: the operator mints a new token.
    #[serde(default = "first_connector")]
    #[schemars(pattern(r"^[A-Za-z0-9_-]{1,63}$"))]
    pub enroll_connector: String,
    /// Connectors refused from now on: their open connections are closed and their
    /// certificates are not renewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(pattern(r"^[A-Za-z0-9_-]{1,63}$")))]
    pub revoked_connectors: Vec<String>,
}

fn first_connector() -> String {
    "connector-1".into()
}

impl Default for TunnelSpec {
    fn default() -> Self {
        Self {
            enroll_connector: first_connector(),
            revoked_connectors: Vec::new(),
        }
    }
}

/// Dataplane sizing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneSpec {
    /// The range the autoscaler keeps the dataplane replicas in.
    #[serde(default)]
    pub replicas: Replicas,
    /// Average CPU utilisation (percent) the autoscaler aims at.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilization")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
}

impl Default for DataplaneSpec {
    fn default() -> Self {
        Self {
            replicas: Replicas::default(),
            target_cpu_utilization: default_cpu_target(),
        }
    }
}

fn default_cpu_target() -> i32 {
    70
}

/// A replica range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
pub struct Replicas {
    /// Fewest replicas (at least 1; 2 or more for availability).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min: i32,
    /// Most replicas.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: default_min_replicas(),
            max: default_max_replicas(),
        }
    }
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    10
}

/// The compliance archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSpec {
    /// The tenant's own S3 (or S3-compatible) bucket.
    pub s3: S3Archive,
    /// How long records stay locked (S3 Object Lock).
    pub retention: Retention,
    /// What happens to a message when its record cannot be made durable:
    /// `block` (fail closed: nothing is forwarded unarchived) or `pass` (fail open).
    #[serde(default)]
    pub on_archive_failure: ArchiveFailure,
    /// When a message may be forwarded: `written` (its record is in the dataplane's log file,
    /// which survives a crash or restart of the dataplane; a node that loses power can lose
    /// the last fsync window, about a millisecond) or `synced` (its record is fsynced; adds an
    /// fsync in each direction to every message). With `pass`, a message goes on anyway once
    /// the log fails or has not written its record within 5 s.
    #[serde(default)]
    pub forward_after: ForwardAfter,
}

/// How far a record must get before its message is forwarded.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardAfter {
    /// Written to the log file: survives a crash of the dataplane.
    #[default]
    Written,
    /// Fsynced: survives the node losing power.
    Synced,
}

/// An S3 bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.roleArn))").message("give either credentialsSecretRef or roleArn, not both"))]
pub struct S3Archive {
    /// Bucket name; Object Lock must be enabled on it.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Region, e.g. `eu-west-2`.
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"))]
    pub region: String,
    /// Endpoint of an S3-compatible store; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 512))]
    pub endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()/-]{1,256}$"))]
    pub prefix: Option<String>,
    /// Secret holding `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// IAM role for the dataplane's service account (IRSA or EKS Pod Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
    ))]
    pub role_arn: Option<String>,
    /// Server-side encryption of archived objects.
    #[serde(default)]
    pub encryption: Encryption,
}

/// Server-side encryption.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'kms' || has(self.kmsKeyId)").message("kms encryption needs kmsKeyId"))]
pub struct Encryption {
    /// `s3` (SSE-S3) or `kms` (SSE-KMS).
    #[serde(default)]
    pub mode: EncryptionMode,
    /// KMS key id or ARN, for `kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

/// SSE mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    /// SSE-S3.
    #[default]
    S3,
    /// SSE-KMS.
    Kms,
}

/// Object Lock retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Days each record stays locked (SEC 17a-4: 3 years for communications, 6 for most records).
    #[schemars(range(min = 1, max = 36500))]
    pub days: i32,
    /// `compliance` (nobody can shorten it) or `governance` (privileged users can).
    #[serde(default)]
    pub mode: RetentionMode,
}

/// Object Lock mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Nobody, not even the root account, can shorten or remove the lock.
    #[default]
    Compliance,
    /// Users with a special permission can shorten or remove the lock.
    Governance,
}

/// Behaviour when archiving fails.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFailure {
    /// Fail closed: hold messages until their records are in the log (see `forwardAfter`).
    #[default]
    Block,
    /// Fail open: forward and keep trying to archive.
    Pass,
}

/// A Secret in the tenant's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
}

/// Identity resolution: handle → person and groups.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// A directory to look handles up in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapDirectory>,
    /// Fixed mappings; these win over the directory.
    #[serde(default, rename = "static", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub static_entries: Vec<StaticIdentity>,
}

/// An LDAP directory.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LdapDirectory {
    /// `ldap://` or `ldaps://` URL.
    #[schemars(regex(pattern = r"^ldaps?://[^\s/]+(:[0-9]{1,5})?/?$"))]
    pub url: String,
    /// Where people are searched.
    #[serde(rename = "baseDN")]
    #[schemars(length(min = 1, max = 1024))]
    pub base_dn: String,
    /// Secret with `bindDN` and `password`; anonymous bind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_secret_ref: Option<SecretRef>,
    /// For each protocol (`xmpp`, `irc`, ...), the attribute holding a person's handle.
    #[serde(default)]
    pub handle_attributes: BTreeMap<String, String>,
    /// Attribute naming the person (default `mail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub person_attribute: Option<String>,
    /// Attribute listing the person's groups (default `memberOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub group_attribute: Option<String>,
    /// How long a lookup is cached, e.g. `10m`.
    #[serde(default, rename = "cacheTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::units::DURATION_PATTERN))]
    pub cache_ttl: Option<String>,
}

/// One fixed handle → person mapping.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StaticIdentity {
    /// The IM handle, e.g. `surferdood124@chat.example`.
    #[schemars(length(min = 1, max = 512))]
    pub handle: String,
    /// The person, usually an e-mail address.
    #[schemars(length(min = 1, max = 512))]
    pub person: String,
    /// Groups the person belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
}

/// Where sessions may go. Clients name the server they want; the dataplanes refuse
/// loopback, private, link-local (the cloud's instance metadata), shared, unique-local,
/// multicast and other non-public addresses, so that no client reaches the cluster's own
/// network through them, unless a network here allows it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationsSpec {
    /// Networks (CIDR ranges or single addresses) sessions may reach although they are not
    /// public, e.g. `10.20.0.0/16` for the firm's IM server inside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = r"^[0-9A-Fa-f:.]{2,39}(/[0-9]{1,3})?$"))
    )]
    pub allow_networks: Vec<String>,
    /// When set, sessions reach only names in these domains (each with every name under it,
    /// e.g. `chat.example.com`) and addresses in `allowNetworks`: any other name is refused
    /// before it is resolved, and an address the client names outside `allowNetworks` is
    /// refused. An allowed name's addresses are still checked as usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 253), regex(pattern = r"^[0-9A-Za-z.-]+$"))
    )]
    pub allow_domains: Vec<String>,
    /// Destinations sessions may not reach even where they are public or allowed above: a
    /// CIDR range, an address, or a domain, which denies every name under it too (checked on
    /// the name the client gives, before it is resolved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 253), regex(pattern = r"^[0-9A-Za-z.:/-]+$"))
    )]
    pub deny: Vec<String>,
    /// The only ports sessions may go to, `5222` or a range `5222-5223`; any port when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = r"^[0-9]{1,5}(-[0-9]{1,5})?$"))
    )]
    pub ports: Vec<String>,
}

/// TLS interception.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret (`tls.crt`, `tls.key`) with the CA that signs intercepted leaf certificates;
    /// the operator generates one when absent.
    #[serde(
        default,
        rename = "interceptionCASecretRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub interception_ca_secret_ref: Option<SecretRef>,
    /// Secret with extra PEM roots (key `ca.crt`) trusted for upstream servers, beside the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_roots_secret_ref: Option<SecretRef>,
}

/// What the operator and dataplanes report about a tenant.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TunnelReady`, `ArchiveReachable`, `PolicyApplied`, `PolicyEnforced`,
    /// `ConnectorEnrollment`, `AlertsDelivered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::schema")]
    pub conditions: Vec<Condition>,
    /// Where connectors reach the tenant's dataplanes (`host:port`, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_endpoint: Option<String>,
    /// Secret holding the current one-time connector enrollment token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_secret_ref: Option<SecretRef>,
    /// Connectors currently connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<i32>,
    /// IM sessions currently proxied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sessions: Option<i32>,
    /// Revision of the compiled policy set delivered to the dataplanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// What each running dataplane last reported, by pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataplanes: Vec<DataplaneReport>,
}

/// What one dataplane reports about itself.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneReport {
    /// The dataplane's pod.
    pub name: String,
    /// Revision of the policy set it enforces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// IM sessions it proxies now.
    pub active_sessions: i64,
    /// Connectors with a tunnel connection to it, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connectors: Vec<String>,
    /// Its archive shipping: `Shipped`, `Reachable` (nothing was due, the store answers),
    /// `Failing` or `NothingShipped` (since it started).
    pub archive: String,
}
