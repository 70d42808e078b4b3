//! Exports for regulators, reviewers and other archives: readable transcripts, EML (one
//! message per conversation-day, as Global Relay and Proofpoint ingest), RSMF 2.0 (Relativity
//! Short Message Format, for eDiscovery) and JSON lines.
//!
//! Invariants: every record given is exported exactly once, in time order within its
//! conversation-day; the original text is always shown, and the delivered text and verdict
//! wherever a rule acted; output is deterministic (same records, same bytes).

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::record::{Body, PresenceChange, Record};
use crate::inspect::policy::Action;

/// One readable line for a record (`None` for records that are not part of a transcript).
pub fn transcript_line(record: &Record) -> Option<String> {
    let time = record.ts.format("%Y-%m-%d %H:%M:%SZ");
    let who = |handle: &str, person: Option<&str>| {
        person.map_or(handle.to_owned(), |p| format!("{p} ({handle})"))
    };
    let line = match &record.body {
        Body::Message {
            from,
            to,
            room,
            text,
            delivered,
            verdict,
            ..
        } => {
            let target = room.clone().unwrap_or_else(|| to.join(", "));
            let mut line = format!(
                "[{time}] {} -> {target}: {text}",
                who(&from.handle, from.person.as_deref())
            );
            if verdict.action != Action::Allow || !verdict.rules.is_empty() {
                line.push_str(&format!(
                    "  [{}: {}]",
                    verdict.action.as_str(),
                    verdict.rules.join(", ")
                ));
            }
            if let Some(delivered) = delivered {
                line.push_str(&format!("  [delivered as: {delivered}]"));
            }
            line
        }
        Body::FileOffer {
            from,
            to,
            name,
            size,
            verdict,
            ..
        } => {
            let size = size.map(|s| format!(", {s} bytes")).unwrap_or_default();
            format!(
                "[{time}] {} -> {}: offers file {name}{size}  [{}]",
                who(&from.handle, from.person.as_deref()),
                to.join(", "),
                verdict.action.as_str()
            )
        }
        Body::SessionStart {
            client,
            server,
            protocol,
            handle,
            ..
        } => {
            format!(
                "[{time}] session started: {} from {client} to {server} ({})",
                handle.as_deref().unwrap_or("unauthenticated"),
                protocol.as_str()
            )
        }
        Body::Presence {
            who: person,
            change,
            room,
            text,
            ..
        } => {
            let who = who(&person.handle, person.person.as_deref());
            let room = room.as_deref().unwrap_or_default();
            let text = text.as_deref().unwrap_or_default();
            match change {
                PresenceChange::Join => format!("[{time}] {who} joined {room}"),
                PresenceChange::Leave => format!("[{time}] {who} left {room}"),
                PresenceChange::Topic => format!("[{time}] {who} set the topic of {room}: {text}"),
                PresenceChange::Nick => format!("[{time}] {who} is now known as {text}"),
            }
        }
        Body::SessionEnd { reason, .. } => format!("[{time}] session ended: {reason}"),
        Body::Identity { .. } | Body::System { .. } | Body::Gap { .. } => return None,
    };
    Some(line)
}

/// Records grouped by conversation and UTC day, in time order.
pub fn conversation_days(records: &[Record]) -> BTreeMap<(String, String), Vec<&Record>> {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for record in records {
        groups
            .entry((
                record.conv.clone(),
                record.ts.format("%Y-%m-%d").to_string(),
            ))
            .or_default()
            .push(record);
    }
    for group in groups.values_mut() {
        group.sort_by(|a, b| (a.ts, &a.writer, a.seq).cmp(&(b.ts, &b.writer, b.seq)));
    }
    groups
}

/// A file name safe on any filesystem, from a conversation id and a day.
pub fn file_stem(conversation: &str, day: &str) -> String {
    let safe: String = conversation
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{day}")
}

fn participants(records: &[&Record]) -> BTreeMap<String, Option<String>> {
    let mut people = BTreeMap::new();
    for record in records {
        match &record.body {
            Body::Message { from, to, .. } | Body::FileOffer { from, to, .. } => {
                let entry = people.entry(from.handle.clone()).or_insert(None);
                if entry.is_none() {
                    entry.clone_from(&from.person);
                }
                for handle in to {
                    people.entry(handle.clone()).or_insert(None);
                }
            }
            Body::Presence { who, .. } => {
                let entry = people.entry(who.handle.clone()).or_insert(None);
                if entry.is_none() {
                    entry.clone_from(&who.person);
                }
            }
            _ => {}
        }
    }
    people
}

fn address(handle: &str, person: Option<&str>) -> String {
    let mailbox = person.filter(|p| p.contains('@')).map_or_else(
        || format!("{}@im.invalid", handle.replace(['@', ' '], ".")),
        str::to_owned,
    );
    format!("\"{}\" <{mailbox}>", handle.replace('"', "'"))
}

fn headers(out: &mut String, records: &[&Record], conversation: &str, day: &str, tenant: &str) {
    let people = participants(records);
    let first = records.first().map(|r| r.ts).unwrap_or_default();
    let sender = records
        .iter()
        .find_map(|r| r.sender())
        .map(|p| address(&p.handle, p.person.as_deref()))
        .unwrap_or_else(|| address("imgate", None));
    let recipients: Vec<String> = people
        .iter()
        .map(|(h, p)| address(h, p.as_deref()))
        .collect();
    let messages = records
        .iter()
        .filter(|r| matches!(r.body, Body::Message { .. }))
        .count();
    out.push_str(&format!("From: {sender}\r\n"));
    out.push_str(&format!("To: {}\r\n", recipients.join(",\r\n ")));
    out.push_str(&format!("Date: {}\r\n", first.to_rfc2822()));
    out.push_str(&format!(
        "Subject: IM conversation {conversation} on {day} ({messages} messages)\r\n"
    ));
    out.push_str(&format!(
        "Message-ID: <{}.{tenant}@imgate.invalid>\r\n",
        file_stem(conversation, day)
    ));
    out.push_str(&format!(
        "X-IMGate-Tenant: {tenant}\r\nX-IMGate-Conversation: {conversation}\r\n"
    ));
    out.push_str("MIME-Version: 1.0\r\n");
}

/// One EML message for a conversation-day: headers naming every participant and a plain-text
/// transcript.
pub fn eml(records: &[&Record], conversation: &str, day: &str, tenant: &str) -> Vec<u8> {
    let mut out = String::new();
    headers(&mut out, records, conversation, day, tenant);
    out.push_str(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    for line in records.iter().filter_map(|r| transcript_line(r)) {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// One RSMF 2.0 file for a conversation-day: an EML whose `X-RSMF-*` headers describe the
/// events and whose `rsmf.zip` attachment holds `rsmf_manifest.json`.
pub fn rsmf(records: &[&Record], conversation: &str, day: &str, tenant: &str) -> Vec<u8> {
    let people = participants(records);
    let ids: BTreeMap<&String, String> = people
        .keys()
        .enumerate()
        .map(|(i, h)| (h, format!("P{}", i + 1)))
        .collect();
    let platform = records.iter().find_map(|r| match &r.body {
        Body::Message { protocol, .. }
        | Body::FileOffer { protocol, .. }
        | Body::Presence { protocol, .. } => Some(protocol.as_str()),
        _ => None,
    });
    let group = records.iter().any(|r| {
        matches!(
            &r.body,
            Body::Message { room: Some(_), .. } | Body::Presence { room: Some(_), .. }
        )
    });
    let events: Vec<serde_json::Value> = records
        .iter()
        .filter_map(|r| match &r.body {
            Body::Message { from, text, delivered, verdict, .. } => Some(json!({
                "id": format!("{}-{}", r.writer, r.seq),
                "type": "message",
                "conversation": "C1",
                "participant": ids.get(&from.handle),
                "timestamp": r.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "body": text,
                "custom": [{"name": "imgate-action", "value": verdict.action.as_str()},
                           {"name": "imgate-rules", "value": verdict.rules.join(", ")},
                           {"name": "imgate-delivered", "value": delivered.clone().unwrap_or_default()}],
            })),
            Body::FileOffer { from, name, .. } => Some(json!({
                "id": format!("{}-{}", r.writer, r.seq),
                "type": "message",
                "conversation": "C1",
                "participant": ids.get(&from.handle),
                "timestamp": r.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "body": format!("(file offered: {name})"),
            })),
            Body::Presence { who, change: change @ (PresenceChange::Join | PresenceChange::Leave), .. } => Some(json!({
                "id": format!("{}-{}", r.writer, r.seq),
                "type": change.as_str(),
                "conversation": "C1",
                "participant": ids.get(&who.handle),
                "timestamp": r.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })),
            _ => None,
        })
        .collect();
    let manifest = json!({
        "version": "2.0.0",
        "participants": people.iter().map(|(handle, person)| {
            let mut p = json!({"id": ids[handle], "display": person.clone().unwrap_or_else(|| handle.clone()), "account_id": handle});
            if let Some(email) = person.as_ref().filter(|p| p.contains('@')) {
                p["email"] = json!(email);
            }
            p
        }).collect::<Vec<_>>(),
        "conversations": [{
            "id": "C1",
            "display": conversation,
            "platform": platform.unwrap_or("im"),
            "type": if group { "channel" } else { "direct" },
            "participants": ids.values().collect::<Vec<_>>(),
        }],
        "events": events,
    });
    let zip = zip_manifest(&serde_json::to_vec_pretty(&manifest).unwrap_or_default());
    let stamp = |ts: Option<DateTime<Utc>>| {
        ts.unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut out = String::new();
    headers(&mut out, records, conversation, day, tenant);
    out.push_str("X-RSMF-Version: 2.0.0\r\nX-RSMF-Generator: imgate\r\n");
    out.push_str(&format!(
        "X-RSMF-BeginDate: {}\r\nX-RSMF-EndDate: {}\r\n",
        stamp(records.first().map(|r| r.ts)),
        stamp(records.last().map(|r| r.ts))
    ));
    out.push_str(&format!("X-RSMF-EventCount: {}\r\n", events.len()));
    let boundary = format!("imgate-{}", file_stem(conversation, day));
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"));
    for line in records.iter().filter_map(|r| transcript_line(r)) {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}\r\nContent-Type: application/zip; name=\"rsmf.zip\"\r\nContent-Disposition: attachment; filename=\"rsmf.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
    for chunk in BASE64.encode(&zip).as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out.into_bytes()
}

fn zip_manifest(manifest: &[u8]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buffer);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let written = writer
        .start_file("rsmf_manifest.json", options)
        .and_then(|()| writer.write_all(manifest).map_err(Into::into))
        .and_then(|()| writer.finish().map(|_| ()));
    if let Err(error) = written {
        unreachable!("writing a zip into memory cannot fail: {error}");
    }
    buffer.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::record::Participant;
    use crate::archive::record::tests::message;
    use imgate_crds::policy::{Direction, Protocol};

    fn presence(change: PresenceChange, room: Option<&str>, text: Option<&str>) -> Record {
        Record {
            body: Body::Presence {
                session: "s1".into(),
                dir: Direction::Outbound,
                protocol: Protocol::Irc,
                who: Participant {
                    handle: "jane@irc.example".into(),
                    person: Some("Jane Doe".into()),
                },
                change,
                room: room.map(str::to_owned),
                text: text.map(str::to_owned),
            },
            ..message(1, "")
        }
    }

    #[test]
    fn transcripts_show_who_joined_left_renamed_and_set_topics() {
        let line = |record: Record| {
            let line = transcript_line(&record).expect("a transcript line");
            line.split_once("] ")
                .map(|(_, l)| l.to_owned())
                .unwrap_or(line)
        };
        assert_eq!(
            line(presence(PresenceChange::Join, Some("#desk"), None)),
            "Jane Doe (jane@irc.example) joined #desk"
        );
        assert_eq!(
            line(presence(PresenceChange::Leave, Some("#desk"), None)),
            "Jane Doe (jane@irc.example) left #desk"
        );
        assert_eq!(
            line(presence(PresenceChange::Topic, Some("#desk"), Some("Q3"))),
            "Jane Doe (jane@irc.example) set the topic of #desk: Q3"
        );
        assert_eq!(
            line(presence(PresenceChange::Nick, None, Some("jd"))),
            "Jane Doe (jane@irc.example) is now known as jd"
        );
    }

    #[test]
    fn room_members_who_only_joined_are_participants() {
        let join = presence(PresenceChange::Join, Some("#desk"), None);
        let said = message(2, "hello");
        let people = participants(&[&join, &said]);
        assert_eq!(
            people.keys().map(String::as_str).collect::<Vec<_>>(),
            ["bob@chat.example", "jane@chat.example", "jane@irc.example"]
        );
    }
}
