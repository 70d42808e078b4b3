//! A record encoded before the log numbers it.
//!
//! The log assigns a record's sequence number and timestamp under its lock, and both sit in
//! the middle of the record's JSON. A [`Draft`] is everything else, encoded by the producer
//! before it takes the lock, so that under the lock only the two fields are spliced in:
//! producers on different threads encode at the same time instead of in turn.
//!
//! Invariants: [`Draft::finish`] yields exactly the bytes that [`Record::to_json`] gives for
//! the same fields (same names, order and escaping); a draft holds one buffer and borrows
//! nothing, so it can be built anywhere and moved into the log.

use chrono::{DateTime, Utc};
use serde::Serialize;

#[cfg(doc)]
use super::record::Record;
use super::record::{Body, FORMAT_VERSION};

/// The fields before `seq`, in [`Record`]'s order.
#[derive(Serialize)]
struct Head<'a> {
    v: u32,
    tenant: &'a str,
    writer: &'a str,
}

/// The fields after `ts`, in [`Record`]'s order.
#[derive(Serialize)]
struct Tail<'a> {
    conv: &'a str,
    #[serde(flatten)]
    body: &'a Body,
}

/// A record without its sequence number and timestamp, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The head's object without its closing brace, then the tail's object with its opening
    /// brace turned into a comma.
    json: Vec<u8>,
    /// Where the tail starts in `json`.
    split: usize,
}

impl Draft {
    /// Encodes a record of conversation `conv`, in the current format version, by `writer`
    /// for `tenant`.
    pub fn new(tenant: &str, writer: &str, conv: &str, body: &Body) -> Self {
        let head = Head {
            v: FORMAT_VERSION,
            tenant,
            writer,
        };
        let mut json = Vec::new();
        encode(&mut json, &head);
        json.pop();
        let split = json.len();
        encode(&mut json, &Tail { conv, body });
        json[split] = b',';
        Self { json, split }
    }

    /// The record's JSON line (without the newline), numbered `seq` and stamped `ts`.
    pub fn finish(&self, seq: u64, ts: DateTime<Utc>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + 64);
        out.extend_from_slice(&self.json[..self.split]);
        out.extend_from_slice(b",\"seq\":");
        encode(&mut out, &seq);
        out.extend_from_slice(b",\"ts\":");
        encode(&mut out, &ts);
        out.extend_from_slice(&self.json[self.split..]);
        out
    }
}

/// Appends `value`'s JSON to `out`.
fn encode(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value)
        .unwrap_or_else(|error| unreachable!("a record's fields always serialize: {error}"));
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use imgate_crds::policy::{Direction, Protocol};
    use proptest::prelude::*;

    use super::Draft;
    use crate::archive::record::tests::message;
    use crate::archive::record::{Body, Participant, PresenceChange, Record};

    fn drafted(record: &Record) -> Vec<u8> {
        Draft::new(&record.tenant, &record.writer, &record.conv, &record.body)
            .finish(record.seq, record.ts)
    }

    #[test]
    fn every_kind_of_record_is_drafted_as_it_encodes() {
        let mut record = message(42, "hello");
        let bodies = [
            record.body.clone(),
            Body::SessionStart {
                session: "s1".into(),
                connector: Some("site-a".into()),
                client: "10.0.0.7:51000".into(),
                server: "chat.example:5222".into(),
                protocol: Protocol::Xmpp,
                handle: None,
                tls: Some("intercept".into()),
            },
            Body::Presence {
                session: "s1".into(),
                dir: Direction::Inbound,
                protocol: Protocol::Irc,
                who: Participant::default(),
                change: PresenceChange::Topic,
                room: Some("#desk".into()),
                text: Some("quotes \"here\" and a tab\t".into()),
            },
            Body::System {
                event: "policy-reload".into(),
                detail: String::new(),
            },
            Body::Gap {
                since: "2026-12-06T10:00:00.000Z".into(),
                reason: "No space left on device".into(),
                refused: 3,
                on_failure: "block".into(),
                late: Some([7, 9]),
            },
        ];
        for body in bodies {
            record.body = body;
            assert_eq!(
                String::from_utf8(drafted(&record)),
                String::from_utf8(record.to_json())
            );
        }
    }

    proptest! {
        #[test]
        fn any_record_is_drafted_as_it_encodes(
            tenant in any::<String>(),
            writer in any::<String>(),
            conv in any::<String>(),
            text in any::<String>(),
            seq in any::<u64>(),
            nanos in any::<i64>(),
        ) {
            let mut record = message(seq, &text);
            record.tenant = tenant;
            record.writer = writer;
            record.conv = conv;
            record.ts = DateTime::<Utc>::from_timestamp_nanos(nanos);
            prop_assert_eq!(drafted(&record), record.to_json());
        }
    }
}
