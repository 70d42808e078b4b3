//! A tenant's `spec.alerts`, checked and with its credentials read: what the outbox and the
//! receivers run on.
//!
//! Invariants: a configuration that loads has, for every receiver, a parsed address and
//! (unless `allowPrivateNetwork`) no literal address outside the public internet; a receiver
//! whose Secret cannot be read is set aside as broken (reported, while the others run);
//! a webhook key is used without the line end a file may give it; [`check`] finds the same faults without reading Secrets, for
//! `imgate policy lint`, each with the field it is at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imgate_crds::alerts::{AlertReceiver, AlertsSpec};
use imgate_crds::policy::Severity;
use imgate_crds::tenant::SecretRef;

use crate::proxy::destination::Destinations;

/// Why alerts cannot be configured as given.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is wrong.
    #[error("{path}: {why}")]
    Field {
        /// Where, e.g. `receivers[1].webhook.url`.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A Secret's key could not be read.
    #[error(
        "receiver {receiver}: cannot read {}: {source} (the Secret {secret:?} with key {key:?} is mounted there)",
        path.display()
    )]
    Secret {
        /// The receiver.
        receiver: String,
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
        /// Where it was looked for.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where alerts go, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hits of one rule by one sender within this time are one alert.
    pub window: Duration,
    /// The receivers.
    pub receivers: Vec<Receiver>,
    /// Receivers that cannot run, and why (a Secret they name cannot be read): reported as
    /// failing, while the others run.
    pub broken: Vec<(String, String)>,
}

/// One receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Its name.
    pub name: String,
    /// The least severity it gets.
    pub min_severity: Severity,
    /// Whether it gets the message text.
    pub include_text: bool,
    /// Whether it may be at a non-public address.
    pub allow_private: bool,
    /// Where and how.
    pub kind: Kind,
}

/// How a receiver is reached.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Alertmanager's API v2 at this base URL.
    Alertmanager {
        /// `…/api/v2/alerts`.
        url: http::Uri,
    },
    /// A signed webhook.
    Webhook {
        /// Where to post.
        url: http::Uri,
        /// The HMAC key.
        secret: Vec<u8>,
    },
    /// Syslog over TLS.
    Syslog {
        /// The collector's name (checked against its certificate).
        host: String,
        /// Its port.
        port: u16,
        /// PEM roots instead of the system's.
        roots: Option<Vec<u8>>,
    },
    /// SMTP with STARTTLS.
    Email {
        /// The server's name (checked against its certificate).
        host: String,
        /// Its port.
        port: u16,
        /// The sender.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// User name and password for AUTH.
        credentials: Option<(String, String)>,
        /// PEM roots instead of the system's.
        roots: Option<Vec<u8>>,
    },
}

impl Kind {
    /// `alertmanager`, `webhook`, `syslog`, `email`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Alertmanager { .. } => "alertmanager",
            Kind::Webhook { .. } => "webhook",
            Kind::Syslog { .. } => "syslog",
            Kind::Email { .. } => "email",
        }
    }
}

/// Loads `spec`, reading each Secret key a receiver names from `secrets/<name>/<key>` (where
/// the operator mounts them).
pub fn load(spec: &AlertsSpec, secrets: &Path) -> Result<Settings, ConfigError> {
    if let Some((path, why)) = check(spec).into_iter().next() {
        return Err(ConfigError::Field { path, why });
    }
    let window =
        imgate_crds::units::parse_duration(&spec.group_window).map_err(|e| ConfigError::Field {
            path: "groupWindow".into(),
            why: e.to_string(),
        })?;
    let mut receivers = Vec::new();
    let mut broken = Vec::new();
    for receiver in &spec.receivers {
        match load_receiver(receiver, secrets) {
            Ok(loaded) => receivers.push(loaded),
            Err(error @ ConfigError::Secret { .. }) => {
                tracing::error!(%error, "an alert receiver cannot run; the others do");
                broken.push((receiver.name.clone(), error.to_string()));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Settings {
        window,
        receivers,
        broken,
    })
}

fn load_receiver(receiver: &AlertReceiver, secrets: &Path) -> Result<Receiver, ConfigError> {
    let read = |secret: &SecretRef, key: &str| {
        let path = secrets.join(&secret.name).join(key);
        std::fs::read(&path).map_err(|source| ConfigError::Secret {
            receiver: receiver.name.clone(),
            secret: secret.name.clone(),
            key: key.into(),
            path,
            source,
        })
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_owned();
    let kind = if let Some(am) = &receiver.alertmanager {
        let base = am.url.trim_end_matches('/');
        Kind::Alertmanager {
            url: parse_url(&format!("{base}/api/v2/alerts"), "alertmanager.url")?,
        }
    } else if let Some(hook) = &receiver.webhook {
        Kind::Webhook {
            url: parse_url(&hook.url, "webhook.url")?,
            secret: trim_line_end(read(&hook.secret_ref, "secret")?),
        }
    } else if let Some(syslog) = &receiver.syslog {
        let (host, port) = split_address(&syslog.address, "syslog.address")?;
        Kind::Syslog {
            host,
            port,
            roots: syslog
                .ca_secret_ref
                .as_ref()
                .map(|s| read(s, "ca.crt"))
                .transpose()?,
        }
    } else if let Some(email) = &receiver.email {
        let (host, port) = split_address(&email.smtp, "email.smtp")?;
        let credentials = match &email.credentials_secret_ref {
            Some(secret) => Some((
                text(read(secret, "username")?),
                text(read(secret, "password")?),
            )),
            None => None,
        };
        Kind::Email {
            host,
            port,
            from: email.from.clone(),
            to: email.to.clone(),
            credentials,
            roots: email
                .ca_secret_ref
                .as_ref()
                .map(|s| read(s, "ca.crt"))
                .transpose()?,
        }
    } else {
        return Err(ConfigError::Field {
            path: format!("receivers[{}]", receiver.name),
            why: "a receiver needs exactly one of alertmanager, webhook, syslog or email".into(),
        });
    };
    Ok(Receiver {
        name: receiver.name.clone(),
        min_severity: receiver.min_severity,
        include_text: receiver.include_text,
        allow_private: receiver.allow_private_network,
        kind,
    })
}

/// `bytes` without a line end at its end (a Secret made from a file often has one).
fn trim_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

/// Every fault in `spec` that the schema cannot see, as (field path under `spec.alerts`,
/// what is wrong).
pub fn check(spec: &AlertsSpec) -> Vec<(String, String)> {
    let mut faults = Vec::new();
    match imgate_crds::units::parse_duration(&spec.group_window) {
        Err(error) => faults.push(("groupWindow".into(), error.to_string())),
        Ok(window) if window < Duration::from_secs(1) => faults.push((
            "groupWindow".into(),
            format!(
                "{:?} is shorter than a second: hits of one rule by one sender within it are one alert, so give it at least 1s (10m is usual)",
                spec.group_window
            ),
        )),
        Ok(_) => {}
    }
    for (i, receiver) in spec.receivers.iter().enumerate() {
        let at = |field: &str| format!("receivers[{i}].{field}");
        let mut hosts = Vec::new();
        if let Some(am) = &receiver.alertmanager {
            match parse_url(&am.url, "") {
                Ok(url) => hosts.push((at("alertmanager.url"), host_of(&url))),
                Err(error) => faults.push((at("alertmanager.url"), why(error))),
            }
        }
        if let Some(hook) = &receiver.webhook {
            match parse_url(&hook.url, "") {
                Ok(url) => hosts.push((at("webhook.url"), host_of(&url))),
                Err(error) => faults.push((at("webhook.url"), why(error))),
            }
        }
        if let Some(syslog) = &receiver.syslog {
            match split_address(&syslog.address, "") {
                Ok((host, _)) => hosts.push((at("syslog.address"), host)),
                Err(error) => faults.push((at("syslog.address"), why(error))),
            }
        }
        if let Some(email) = &receiver.email {
            match split_address(&email.smtp, "") {
                Ok((host, _)) => hosts.push((at("email.smtp"), host)),
                Err(error) => faults.push((at("email.smtp"), why(error))),
            }
            for (field, address) in std::iter::once(("email.from".to_owned(), &email.from)).chain(
                email
                    .to
                    .iter()
                    .enumerate()
                    .map(|(j, to)| (format!("email.to[{j}]"), to)),
            ) {
                if address.parse::<lettre::Address>().is_err() {
                    faults.push((at(&field), format!("{address:?} is not an e-mail address")));
                }
            }
        }
        if !receiver.allow_private_network {
            for (path, host) in hosts {
                if let Some(why) = private_refusal(&host) {
                    faults.push((path, why));
                }
            }
        }
    }
    faults
}

fn why(error: ConfigError) -> String {
    match error {
        ConfigError::Field { why, .. } => why,
        other => other.to_string(),
    }
}

/// Why a literal address may not receive alerts, when it is not public.
fn private_refusal(host: &str) -> Option<String> {
    let ip: IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    refusal(ip).map(|why| {
        format!("{ip} is {why}: alerts go to public addresses unless the receiver sets allowPrivateNetwork: true")
    })
}

/// Why `ip` is not public, or `None` when it is.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    Destinations::new(Vec::new()).refusal(ip)
}

fn parse_url(text: &str, path: &str) -> Result<http::Uri, ConfigError> {
    let field = |why: String| ConfigError::Field {
        path: path.into(),
        why,
    };
    let url: http::Uri = text
        .parse()
        .map_err(|e| field(format!("{text:?} is not a URL: {e}")))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(field(format!("{text:?} is not an http:// or https:// URL"))),
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(field(format!("{text:?} names no host")));
    }
    Ok(url)
}

fn host_of(url: &http::Uri) -> String {
    url.host().unwrap_or_default().to_owned()
}

fn split_address(text: &str, path: &str) -> Result<(String, u16), ConfigError> {
    let field = |why: String| ConfigError::Field {
        path: path.into(),
        why,
    };
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| field(format!("{text:?} is not host:port")))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| field(format!("{text:?} has no valid port")))?;
    if host.is_empty() {
        return Err(field(format!("{text:?} names no host")));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AlertsSpec {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn a_receiver_at_a_loopback_or_link_local_address_is_refused_unless_allowed() {
        let refused = spec(
            "receivers:\n- name: am\n  alertmanager: {url: 'http://127.0.0.1:9093'}\n- name: meta\n  webhook: {url: 'http://169.254.169.254/latest', secretRef: {name: k}}\n- name: ok\n  allowPrivateNetwork: true\n  syslog: {address: '10.0.0.5:6514'}\n- name: public\n  syslog: {address: 'siem.example.com:6514'}\n",
        );
        let faults = check(&refused);
        let paths: Vec<&str> = faults.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["receivers[0].alertmanager.url", "receivers[1].webhook.url"],
            "{faults:?}"
        );
        assert!(faults[0].1.contains("loopback"), "{faults:?}");
        assert!(faults[1].1.contains("link-local"), "{faults:?}");
        assert!(faults[1].1.contains("allowPrivateNetwork"), "{faults:?}");
    }

    #[test]
    fn a_window_shorter_than_a_second_is_refused() {
        let faults = check(&spec(
            "groupWindow: 500ms\nreceivers:\n- name: am\n  alertmanager: {url: 'https://am.example'}\n",
        ));
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].0, "groupWindow");
        assert!(faults[0].1.contains("at least 1s"), "{faults:?}");
    }

    #[test]
    fn bad_addresses_and_missing_secrets_say_where_and_what_to_do() {
        let faults = check(&spec(
            "receivers:\n- name: mail\n  email: {smtp: 'smtp.example:587', from: 'not an address', to: ['ok@example.com']}\n",
        ));
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].0, "receivers[0].email.from");

        let dir = tempfile::tempdir().expect("tempdir");
        let settings = load(
            &spec("receivers:\n- name: hook\n  webhook: {url: 'https://h.example/x', secretRef: {name: hook-key}}\n- name: am\n  alertmanager: {url: 'https://am.example'}\n"),
            dir.path(),
        )
        .expect("the others run");
        assert_eq!(settings.receivers.len(), 1, "only the Alertmanager runs");
        let (name, why) = &settings.broken[0];
        assert_eq!(name, "hook");
        assert!(
            why.contains("receiver hook") && why.contains("hook-key/secret"),
            "{why}"
        );
        std::fs::create_dir(dir.path().join("hook-key")).expect("mkdir");
        std::fs::write(dir.path().join("hook-key/secret"), "s3cret\n").expect("write");
        let settings = load(
            &spec("receivers:\n- name: hook\n  webhook: {url: 'https://h.example/x', secretRef: {name: hook-key}}\n"),
            dir.path(),
        )
        .expect("loads");
        assert_eq!(settings.window, Duration::from_secs(600));
        match &settings.receivers[0].kind {
            Kind::Webhook { secret, url } => {
                assert_eq!(secret, b"s3cret");
                assert_eq!(url.host(), Some("h.example"));
            }
            other => panic!("{other:?}"),
        }
    }
}
