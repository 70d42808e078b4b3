//! Alerts as Prometheus Alertmanager takes them: `POST /api/v2/alerts` with a JSON array.
//!
//! Invariants: one imgate alert is one Alertmanager alert, identified by its labels (which
//! never change over its life, so a notice sent again is the same alert to Alertmanager);
//! a firing alert ends (`endsAt`) when its window closes, or a window from now when it
//! arrives late, so Alertmanager resolves it even if the resolution never arrives, yet
//! notifies of it firing first (it tells no one of an alert it never saw firing); the
//! resolution ends it now; the count and the rest change only in annotations.

use serde_json::{Value, json};

use chrono::{DateTime, Utc};

use super::outbox::{Notice, Status};

/// The `alertname` label of every imgate alert.
pub const ALERT_NAME: &str = "ImgateRuleMatched";

/// The request body for `notices`.
pub fn body(tenant: &str, notices: &[Notice], now: DateTime<Utc>) -> Vec<u8> {
    let alerts: Vec<Value> = notices
        .iter()
        .map(|notice| {
            let alert = &notice.alert;
            let ends = match notice.status {
                Status::Firing => alert
                    .closes
                    .max(now.checked_add_signed(alert.window()).unwrap_or(now)),
                Status::Resolved => now,
            };
            let mut annotations = json!({
                "summary": super::summary(alert),
                "count": alert.count.to_string(),
                "conversation": alert.conv,
                "record": alert.record,
                "protocol": alert.protocol.as_str(),
                "action": alert.action.as_str(),
                "first": alert.first.to_rfc3339(),
                "last": alert.last.to_rfc3339(),
            });
            if let Some(person) = &alert.sender.person {
                annotations["person"] = json!(person);
            }
            if let Some(text) = &alert.text {
                annotations["text"] = json!(text);
            }
            json!({
                "labels": {
                    "alertname": ALERT_NAME,
                    "tenant": tenant,
                    "rule": alert.rule,
                    "severity": super::severity_name(alert.severity),
                    "sender": alert.sender.handle,
                    "imgate_alert_id": alert.id,
                },
                "annotations": annotations,
                "startsAt": alert.first.to_rfc3339(),
                "endsAt": ends.to_rfc3339(),
            })
        })
        .collect();
    serde_json::to_vec(&alerts).unwrap_or_else(|e| unreachable!("JSON values serialize: {e}"))
}
