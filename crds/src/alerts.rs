//! `spec.alerts`: where a tenant's alerts go, which severities go where, and how hits are
//! grouped into one alert.
//!
//! Invariants: every receiver has exactly one kind (`alertmanager`, `webhook`, `syslog`,
//! `email`) and a name unique in the tenant; credentials are only ever named (a Secret), never
//! written in the resource; message text reaches a receiver only when that receiver says
//! `includeText: true`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Severity;
use crate::tenant::SecretRef;

/// Where alerts are delivered and how they are grouped.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.receivers.all(r, self.receivers.exists_one(s, s.name == r.name))").message("receiver names must be unique"))]
pub struct AlertsSpec {
    /// Hits of one rule by one sender within this time are one alert with a count, e.g.
    /// `10m`; the alert resolves when the window closes.
    #[serde(default = "default_group_window")]
    #[schemars(regex(pattern = crate::units::DURATION_PATTERN))]
    pub group_window: String,
    /// Where alerts go; each receiver gets every alert at or above its `minSeverity`.
    #[schemars(length(min = 1, max = 16))]
    pub receivers: Vec<AlertReceiver>,
}

/// The grouping window when none is given.
pub fn default_group_window() -> String {
    "10m".into()
}

/// One place alerts go: exactly one of `alertmanager`, `webhook`, `syslog` or `email`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.alertmanager), has(self.webhook), has(self.syslog), has(self.email)].filter(x, x).size() == 1").message("a receiver needs exactly one of alertmanager, webhook, syslog or email"))]
pub struct AlertReceiver {
    /// The receiver's name, in metrics, status and records.
    #[schemars(regex(pattern = crate::NAME_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The least severity sent here (`low` sends everything).
    #[serde(default = "lowest")]
    pub min_severity: Severity,
    /// Put the message's text in the alert. Off by default: message text reaches a SIEM or a
    /// mailbox only when the firm asks for it.
    #[serde(default)]
    pub include_text: bool,
    /// Let the receiver be at a loopback, private or link-local address (refused otherwise,
    /// so that a tenant cannot point the dataplane at the cluster's own services).
    #[serde(default)]
    pub allow_private_network: bool,
    /// Prometheus Alertmanager (API v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerReceiver>,
    /// An HTTPS endpoint receiving JSON, signed with HMAC-SHA256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReceiver>,
    /// A SIEM taking syslog (RFC 5424) over TLS (RFC 5425).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<SyslogReceiver>,
    /// E-mail over SMTP with STARTTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailReceiver>,
}

fn lowest() -> Severity {
    Severity::Low
}

/// Prometheus Alertmanager.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerReceiver {
    /// Its base URL, e.g. `http://alertmanager.monitoring:9093`; alerts are posted to
    /// `/api/v2/alerts` under it.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 512))]
    pub url: String,
}

/// A webhook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceiver {
    /// Where alerts are posted.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 512))]
    pub url: String,
    /// Secret whose key `secret` signs each request (header `X-Imgate-Signature`:
    /// `v1=` and the hex HMAC-SHA256 of the `X-Imgate-Timestamp` value, a dot and the body).
    pub secret_ref: SecretRef,
}

/// Syslog over TLS.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyslogReceiver {
    /// `host:port` of the collector (6514 is syslog over TLS's port).
    #[schemars(regex(pattern = r"^[^\s:/]+:[0-9]{1,5}$"), length(max = 260))]
    pub address: String,
    /// Secret whose key `ca.crt` holds the PEM roots the collector's certificate is checked
    /// against, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
}

/// E-mail.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailReceiver {
    /// `host:port` of the SMTP server (587 is submission); STARTTLS is required.
    #[schemars(regex(pattern = r"^[^\s:/]+:[0-9]{1,5}$"), length(max = 260))]
    pub smtp: String,
    /// The sender address.
    #[schemars(length(min = 3, max = 254))]
    pub from: String,
    /// The recipients.
    #[schemars(length(min = 1, max = 32), inner(length(min = 3, max = 254)))]
    pub to: Vec<String>,
    /// Secret with keys `username` and `password` for SMTP AUTH; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Secret whose key `ca.crt` holds the PEM roots the server's certificate is checked
    /// against, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{ResourceKind, validate_object};

    fn tenant(alerts: Value) -> Value {
        json!({"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {"archive": {"s3": {"bucket": "acme-archive", "region": "eu-west-2"}, "retention": {"days": 10}},
                     "alerts": alerts}})
    }

    #[test]
    fn every_kind_of_receiver_passes() {
        let value = tenant(json!({"groupWindow": "5m", "receivers": [
            {"name": "am", "alertmanager": {"url": "http://alertmanager.monitoring:9093"}},
            {"name": "hook", "minSeverity": "high", "webhook": {"url": "https://hooks.example/imgate", "secretRef": {"name": "hook-key"}}},
            {"name": "siem", "includeText": true, "syslog": {"address": "siem.example:6514", "caSecretRef": {"name": "siem-ca"}}},
            {"name": "mail", "email": {"smtp": "smtp.example:587", "from": "imgate@acme.example", "to": ["compliance@acme.example"], "credentialsSecretRef": {"name": "smtp"}}}
        ]}));
        assert_eq!(validate_object(ResourceKind::Tenant, &value), vec![]);
        let parsed: crate::Tenant = serde_json::from_value(value).expect("decodes");
        let alerts = parsed.spec.alerts.expect("alerts");
        assert_eq!(
            alerts.receivers[0].min_severity,
            crate::policy::Severity::Low
        );
        assert!(
            !alerts.receivers[0].include_text,
            "text is left out unless asked for"
        );
    }

    #[test]
    fn a_receiver_of_two_kinds_or_none_is_refused_at_its_field() {
        let value = tenant(json!({"receivers": [
            {"name": "both", "alertmanager": {"url": "http://am:9093"}, "webhook": {"url": "https://h.example/", "secretRef": {"name": "k"}}},
            {"name": "none"}
        ]}));
        let errors = validate_object(ResourceKind::Tenant, &value);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["spec.alerts.receivers[0]", "spec.alerts.receivers[1]"],
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|e| e
                .message
                .contains("exactly one of alertmanager, webhook, syslog or email")),
            "{errors:?}"
        );
    }

    #[test]
    fn repeated_names_bad_addresses_and_windows_are_refused() {
        let value = tenant(json!({"groupWindow": "ten minutes", "receivers": [
            {"name": "a", "alertmanager": {"url": "http://am:9093"}},
            {"name": "a", "syslog": {"address": "siem.example"}},
            {"name": "b", "webhook": {"url": "ftp://h.example/", "secretRef": {"name": "k"}}}
        ]}));
        let errors = validate_object(ResourceKind::Tenant, &value);
        let text = format!("{errors:?}");
        for expected in [
            "spec.alerts.groupWindow",
            "spec.alerts.receivers[1].syslog.address",
            "spec.alerts.receivers[2].webhook.url",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        let value = tenant(json!({"receivers": [
            {"name": "a", "alertmanager": {"url": "http://am:9093"}},
            {"name": "a", "syslog": {"address": "siem.example:6514"}}
        ]}));
        let errors = validate_object(ResourceKind::Tenant, &value);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "spec.alerts");
        assert!(
            errors[0].message.contains("receiver names must be unique"),
            "{errors:?}"
        );
    }
}
