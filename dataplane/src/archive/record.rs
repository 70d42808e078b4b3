//! The archive record: one JSON object per line, documented in `docs/archive-format.md`.
//!
//! Invariants: every record carries the format version, tenant, writer, a per-writer sequence
//! number (from 1, no gaps, assigned by the log), a UTC timestamp and a conversation id; a
//! message record keeps the original text and, only when a rule changed it, the delivered
//! text; field names never change within a format version (readers such as DuckDB rely on
//! them).

use chrono::{DateTime, Utc};
use imgate_crds::policy::{Direction, Protocol, Severity};
use serde::{Deserialize, Serialize};

use crate::inspect::event::{ConversationKind, Party};
use crate::inspect::policy::{Action, Verdict};

/// The record format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// One archived event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub v: u32,
    /// The tenant.
    pub tenant: String,
    /// The writer (dataplane pod) whose log assigned `seq`.
    pub writer: String,
    /// Per-writer sequence number: 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// When it happened, UTC.
    pub ts: DateTime<Utc>,
    /// The conversation it belongs to.
    pub conv: String,
    /// What happened.
    #[serde(flatten)]
    pub body: Body,
}

/// What a record describes, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A proxied session began.
    SessionStart {
        /// Session id.
        session: String,
        /// The connector it came through, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connector: Option<String>,
        /// The client's address.
        client: String,
        /// The server, `host:port`.
        server: String,
        /// The protocol identified.
        protocol: Protocol,
        /// The authenticated handle, once known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handle: Option<String>,
        /// `intercept`, `passthrough`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<String>,
    },
    /// A session ended.
    SessionEnd {
        /// Session id.
        session: String,
        /// Why.
        reason: String,
    },
    /// A message, in either direction.
    Message {
        /// Session id.
        session: String,
        /// Which way.
        dir: Direction,
        /// The protocol.
        protocol: Protocol,
        /// The sender.
        from: Participant,
        /// Recipients' handles (empty for a room message).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to: Vec<String>,
        /// The room, for group conversations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// `direct` or `group`.
        kind: Kind,
        /// The text as sent.
        text: String,
        /// The text's bytes as sent, base64, when they were not UTF-8 (`text` then has
        /// U+FFFD where they could not be read).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_base64: Option<String>,
        /// The text as delivered, when a rule changed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<String>,
        /// The policy verdict.
        verdict: RecordedVerdict,
        /// The protocol's id for the message, when it has one (XMPP's `id`, IRC's `msgid`
        /// tag): the same in each copy captured of it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        msgid: Option<String>,
    },
    /// A file-transfer offer.
    FileOffer {
        /// Session id.
        session: String,
        /// Which way.
        dir: Direction,
        /// The protocol.
        protocol: Protocol,
        /// The sender.
        from: Participant,
        /// Recipients' handles.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to: Vec<String>,
        /// The file name.
        name: String,
        /// Size in bytes, when announced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// SHA-256, hex, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// The policy verdict.
        verdict: RecordedVerdict,
    },
    /// Someone joined or left a room, set a room's topic, or took a new nickname.
    Presence {
        /// Session id.
        session: String,
        /// Which way.
        dir: Direction,
        /// The protocol.
        protocol: Protocol,
        /// Who.
        who: Participant,
        /// What changed.
        change: PresenceChange,
        /// The room, for joins, leaves and topics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The topic, the new nickname, or the nickname taken in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A handle resolved to a person.
    Identity {
        /// The handle.
        handle: String,
        /// The person.
        person: String,
        /// Their groups.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        groups: Vec<String>,
        /// Where the answer came from (`static`, `ldap`).
        source: String,
    },
    /// A time when the log could not record: from `since` until this record's timestamp the
    /// log refused the records it was given.
    Gap {
        /// When the log began refusing records (RFC 3339).
        since: String,
        /// Why.
        reason: String,
        /// Records refused meanwhile.
        refused: u64,
        /// What the dataplane did with the events behind refused records, as the Tenant's
        /// `onArchiveFailure` says: `pass` (they went on without a record) or `block`.
        #[serde(default)]
        on_failure: String,
        /// The first and last records numbered before the failure and written only when the
        /// log wrote again: their events waited for them, and went on (`pass`) or were
        /// blocked (`block`) if the failure reached them first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        late: Option<[u64; 2]>,
    },
    /// Something the system did (policy reload, archive failure, legal hold).
    System {
        /// What.
        event: String,
        /// Details.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
}

/// A participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Participant {
    /// The handle on the wire.
    pub handle: String,
    /// The person, when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

impl From<&Party> for Participant {
    fn from(party: &Party) -> Self {
        Self {
            handle: party.handle.clone(),
            person: party.person.clone(),
        }
    }
}

/// What a [`Body::Presence`] record says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceChange {
    /// Entered a room.
    Join,
    /// Left a room.
    Leave,
    /// Set a room's topic.
    Topic,
    /// Took a new nickname.
    Nick,
}

impl PresenceChange {
    /// The name used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceChange::Join => "join",
            PresenceChange::Leave => "leave",
            PresenceChange::Topic => "topic",
            PresenceChange::Nick => "nick",
        }
    }
}

/// One-to-one or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Two parties.
    Direct,
    /// A room.
    Group,
}

impl From<ConversationKind> for Kind {
    fn from(kind: ConversationKind) -> Self {
        match kind {
            ConversationKind::Direct => Kind::Direct,
            ConversationKind::Group => Kind::Group,
        }
    }
}

/// The part of a verdict the archive keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RecordedVerdict {
    /// What happened.
    pub action: Action,
    /// What monitor-mode policies would have done, when not `allow`.
    #[serde(default, skip_serializing_if = "is_allow")]
    pub monitor: Action,
    /// Every rule that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// How serious each match in `rules` is, in the same order (records written before
    /// severities were recorded have none: read them as `medium`, the rules' default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<Severity>,
}

impl RecordedVerdict {
    /// Each matched rule with its severity.
    pub fn matches(&self) -> impl Iterator<Item = (&str, Severity)> {
        self.rules.iter().enumerate().map(|(i, rule)| {
            let severity = self.severities.get(i).copied().unwrap_or_default();
            (rule.as_str(), severity)
        })
    }
}

fn is_allow(action: &Action) -> bool {
    *action == Action::Allow
}

impl From<&Verdict> for RecordedVerdict {
    fn from(verdict: &Verdict) -> Self {
        Self {
            action: verdict.action,
            monitor: verdict.monitor,
            rules: verdict.rule_names().map(str::to_owned).collect(),
            severities: verdict.alerts.iter().map(|a| a.severity).collect(),
        }
    }
}

impl Record {
    /// The record as one JSON line (without the newline).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self)
            .unwrap_or_else(|error| unreachable!("a record always serializes: {error}"))
    }

    /// The person or handle that sent it, for search and indexes.
    pub fn sender(&self) -> Option<&Participant> {
        match &self.body {
            Body::Message { from, .. }
            | Body::FileOffer { from, .. }
            | Body::Presence { who: from, .. } => Some(from),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn message(seq: u64, text: &str) -> Record {
        Record {
            v: FORMAT_VERSION,
            tenant: "acme".into(),
            writer: "dp-0".into(),
            seq,
            ts: DateTime::from_timestamp_millis(1_764_000_000_000 + seq as i64).unwrap_or_default(),
            conv: "c1".into(),
            body: Body::Message {
                session: "s1".into(),
                dir: Direction::Outbound,
                protocol: Protocol::Xmpp,
                from: Participant {
                    handle: "jane@chat.example".into(),
                    person: Some("jane.doe@acme.example".into()),
                },
                to: vec!["bob@chat.example".into()],
                room: None,
                kind: Kind::Direct,
                text: text.into(),
                text_base64: None,
                delivered: None,
                verdict: RecordedVerdict::default(),
                msgid: None,
            },
        }
    }

    #[test]
    fn records_round_trip_as_flat_json() {
        let record = message(7, "hello");
        let json = String::from_utf8(record.to_json()).expect("utf-8");
        assert!(
            json.contains("\"type\":\"message\"")
                && json.contains("\"seq\":7")
                && json.contains("\"ts\":\"2025-"),
            "{json}"
        );
        assert!(
            !json.contains("delivered") && !json.contains("monitor"),
            "absent fields are left out: {json}"
        );
        let back: Record = serde_json::from_slice(json.as_bytes()).expect("parses");
        assert_eq!(back, record);
    }
}
