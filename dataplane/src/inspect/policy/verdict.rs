//! Verdicts: what the policy engine decided about one event, and why.
//!
//! Invariants: `redactions` are sorted, non-overlapping byte spans on character boundaries of
//! the event's text; `action` reflects enforce-mode policies only and `monitor` reflects
//! monitor-mode policies only; `matches` names every rule that matched, in either mode.

use std::borrow::Cow;
use std::sync::Arc;

use imgate_crds::policy::{DisclaimerFrequency, PolicyMode, Severity, TlsMode};
use serde::{Deserialize, Serialize};

/// What happens to an event. Ordered by severity: a later variant wins over an earlier one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver unchanged.
    #[default]
    Allow,
    /// Deliver with the `redactions` masked.
    Redact,
    /// Do not deliver.
    Block,
    /// Do not deliver, and block the sender for a while.
    Quarantine,
}

impl Action {
    /// The name used in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Redact => "redact",
            Action::Block => "block",
            Action::Quarantine => "quarantine",
        }
    }
}

/// A byte range `start..end` of a message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    /// `policy/rule`, as recorded in the archive.
    pub rule: Arc<str>,
    /// The mode of the policy the rule belongs to.
    pub mode: PolicyMode,
    /// What the rule asks for.
    pub action: Action,
    /// Where in the text it matched (empty for rules about the whole event).
    pub spans: Vec<Span>,
    /// Why, in words.
    pub reason: String,
}

/// An alert for the security team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `policy/rule`.
    pub rule: Arc<str>,
    /// How serious it is.
    pub severity: Severity,
    /// Raised by a monitor-mode policy (nothing was changed).
    pub monitor: bool,
}

/// A disclaimer and how often the session injects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disclaimer {
    /// The text.
    pub text: Arc<str>,
    /// Once per conversation or once per session.
    pub once: DisclaimerFrequency,
}

/// The decision about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Verdict {
    /// What happens (enforce-mode policies).
    pub action: Action,
    /// What monitor-mode policies would have done.
    pub monitor: Action,
    /// Spans of the text to mask when `action` is `redact`.
    pub redactions: Vec<Span>,
    /// Every rule that matched, in either mode.
    pub matches: Vec<RuleMatch>,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Notices to send to the sender.
    pub notices: Vec<String>,
    /// A disclaimer to inject; the session injects it once per conversation or session, as
    /// `once` says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disclaimer: Option<Disclaimer>,
    /// TLS handling, for session events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// A file offer that must be scanned for malware before delivery.
    pub scan: bool,
}

/// The character redacted text is replaced with.
pub const REDACTION_MARK: char = '█';

impl Verdict {
    /// The names of every rule that matched, in order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.matches.iter().map(|m| &*m.rule)
    }

    /// The matched rules as a log line shows them (` [a, b]`), or nothing when none matched.
    pub fn rules_note(&self) -> String {
        if self.matches.is_empty() {
            return String::new();
        }
        format!(" [{}]", self.rule_names().collect::<Vec<_>>().join(", "))
    }

    /// The text to deliver: the original, with each redacted character replaced by
    /// [`REDACTION_MARK`] when the action is `redact`.
    pub fn delivered<'a>(&self, original: &'a str) -> Cow<'a, str> {
        if self.action != Action::Redact || self.redactions.is_empty() {
            return Cow::Borrowed(original);
        }
        let mut out = String::with_capacity(original.len() + 8);
        let mut cursor = 0;
        for span in &self.redactions {
            let (start, end) = (span.start.min(original.len()), span.end.min(original.len()));
            if start < cursor
                || !original.is_char_boundary(start)
                || !original.is_char_boundary(end)
            {
                continue;
            }
            out.push_str(&original[cursor..start]);
            out.extend(original[start..end].chars().map(|_| REDACTION_MARK));
            cursor = end;
        }
        out.push_str(&original[cursor..]);
        Cow::Owned(out)
    }
}

/// Sorts spans and merges those that overlap or touch.
pub(crate) fn merge_spans(spans: &mut Vec<Span>) {
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans.drain(..) {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    *spans = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_masks_each_character() {
        let verdict = Verdict {
            action: Action::Redact,
            redactions: vec![Span { start: 4, end: 8 }],
            ..Verdict::default()
        };
        assert_eq!(verdict.delivered("pin 1234 ok"), "pin ████ ok");
        let allowed = Verdict::default();
        assert_eq!(allowed.delivered("pin 1234"), "pin 1234");
    }

    #[test]
    fn spans_merge() {
        let mut spans = vec![
            Span { start: 5, end: 9 },
            Span { start: 0, end: 2 },
            Span { start: 8, end: 12 },
            Span { start: 2, end: 3 },
        ];
        merge_spans(&mut spans);
        assert_eq!(
            spans,
            vec![Span { start: 0, end: 3 }, Span { start: 5, end: 12 }]
        );
    }
}
