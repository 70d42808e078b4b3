//! Alerts that reach people: rule matches read from the archive log (an outbox with a cursor
//! over the log), grouped per rule and sender within a window, and delivered at least once to
//! the tenant's receivers: Prometheus Alertmanager, a signed webhook, syslog over TLS to a
//! SIEM, e-mail over SMTP with STARTTLS.
//!
//! Invariants: alerts are made only from records in the archive log, so an alert always has
//! its evidence in the archive, and nothing the log holds is released before the outbox has
//! read it; a restart, a kill or an unreachable receiver loses no alert; message text leaves
//! for a receiver only when it asks for text. `docs/alerts.md` describes them for users.

pub mod alertmanager;
pub mod config;
pub mod deliver;
pub mod email;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod persist;
pub mod runner;
pub mod syslog;
pub mod webhook;

pub use config::Settings;
pub use metrics::AlertMetrics;
pub use runner::{Alerting, Timing};

use imgate_crds::policy::Severity;

use outbox::Alert;

/// A severity as written in resources and alerts.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// One line saying what an alert is about.
pub fn summary(alert: &Alert) -> String {
    let who = match &alert.sender.person {
        Some(person) => format!("{person} ({})", alert.sender.handle),
        None => alert.sender.handle.clone(),
    };
    let times = if alert.count == 1 {
        "once".to_owned()
    } else {
        format!("{} times", alert.count)
    };
    format!(
        "{who} matched {} ({}) {times} over {}",
        alert.rule,
        severity_name(alert.severity),
        alert.protocol.as_str()
    )
}
