//! What a Tenant's `spec.alerts` adds to its dataplanes: the alerts file in the policy
//! ConfigMap, the options that name it, the Secrets it names mounted one folder each, and a
//! pod annotation that rolls the pods when the alerts change (the dataplane reads them at
//! start).
//!
//! Invariants: each Secret is mounted once, with only the keys the receivers use, under
//! [`ALERT_SECRETS_DIR`]`/<secret>/<key>`, where `imgate up --secrets` looks for them; the
//! Secrets are optional, so one missing keeps its receiver from running (reported in
//! `AlertsDelivered`) rather than the pod from starting; a Tenant without `spec.alerts` gets
//! none of this, so its pods do not change.

use std::collections::BTreeMap;

use imgate_crds::Tenant;
use imgate_crds::alerts::AlertsSpec;
use k8s_openapi::api::core::v1::{
    KeyToPath, ProjectedVolumeSource, SecretProjection, Volume, VolumeProjection,
};
use sha2::{Digest, Sha256};

/// The file in the policy ConfigMap with the tenant's `spec.alerts`, when it has one.
pub const ALERTS_FILE: &str = "alerts.yaml";
/// Where the Secrets the alerts name are mounted.
pub const ALERT_SECRETS_DIR: &str = "/etc/imgate/alert-secrets";
/// The pod annotation holding the alerts' revision.
pub const ALERTS_REVISION: &str = "imgate.io/alerts-revision";

/// The tenant's alerts as the dataplane reads them.
pub fn alerts_yaml(alerts: &AlertsSpec) -> String {
    serde_saphyr::to_string(alerts)
        .unwrap_or_else(|error| unreachable!("an AlertsSpec always serializes to YAML: {error}"))
}

/// The revision of the tenant's alerts, for the pod annotation.
pub fn revision(alerts: &AlertsSpec) -> String {
    hex::encode(&Sha256::digest(alerts_yaml(alerts).as_bytes())[..8])
}

/// Each Secret the alerts name, with the keys used.
fn secret_keys(alerts: &AlertsSpec) -> BTreeMap<String, Vec<&'static str>> {
    let mut secrets: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut add = |name: &str, keys: &[&'static str]| {
        let entry = secrets.entry(name.to_owned()).or_default();
        for key in keys {
            if !entry.contains(key) {
                entry.push(key);
            }
        }
    };
    for receiver in &alerts.receivers {
        if let Some(hook) = &receiver.webhook {
            add(&hook.secret_ref.name, &["secret"]);
        }
        if let Some(ca) = receiver
            .syslog
            .as_ref()
            .and_then(|s| s.ca_secret_ref.as_ref())
        {
            add(&ca.name, &["ca.crt"]);
        }
        if let Some(email) = &receiver.email {
            if let Some(credentials) = &email.credentials_secret_ref {
                add(&credentials.name, &["username", "password"]);
            }
            if let Some(ca) = &email.ca_secret_ref {
                add(&ca.name, &["ca.crt"]);
            }
        }
    }
    secrets
}

/// The volume of the Secrets the alerts name, if they name any.
pub fn secrets_volume(tenant: &Tenant) -> Option<Volume> {
    let secrets = secret_keys(tenant.spec.alerts.as_ref()?);
    if secrets.is_empty() {
        return None;
    }
    let sources = secrets
        .into_iter()
        .map(|(name, keys)| VolumeProjection {
            secret: Some(SecretProjection {
                items: Some(
                    keys.iter()
                        .map(|key| KeyToPath {
                            key: (*key).into(),
                            path: format!("{name}/{key}"),
                            mode: None,
                        })
                        .collect(),
                ),
                name: name.clone(),
                optional: Some(true),
            }),
            ..VolumeProjection::default()
        })
        .collect();
    Some(Volume {
        name: "alert-secrets".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
        }),
        ..Volume::default()
    })
}
