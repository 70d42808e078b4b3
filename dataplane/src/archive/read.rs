//! The read side: manifests and records back out of a store, filtered, for the compliance
//! officer's tools (`imgate archive ls|search|show|export`).
//!
//! Invariants: only segments whose time range overlaps the query are fetched; a segment that
//! cannot be read or fails its checksum is an error naming its key, never skipped; records
//! come back ordered by time, then writer and sequence number.

use chrono::{DateTime, Utc};

use super::error::ArchiveError;
use super::record::{Body, Record};
use super::segment::{Layout, Manifest, open_segment, sha256_hex};
use super::store::Store;

/// What to look for; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// From this time on.
    pub from: Option<DateTime<Utc>>,
    /// Up to this time.
    pub to: Option<DateTime<Utc>>,
    /// The sender's person (case-insensitive).
    pub person: Option<String>,
    /// The sender's or a recipient's handle (case-insensitive).
    pub handle: Option<String>,
    /// The room.
    pub room: Option<String>,
    /// Text contained in the message (case-insensitive).
    pub text: Option<String>,
    /// A rule that matched (`policy/rule`, or a policy name for all its rules).
    pub rule: Option<String>,
    /// The conversation id.
    pub conversation: Option<String>,
}

impl Query {
    /// True when `record` matches every filter given.
    pub fn matches(&self, record: &Record) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if self.from.is_some_and(|from| record.ts < from)
            || self.to.is_some_and(|to| record.ts > to)
        {
            return false;
        }
        if self
            .conversation
            .as_deref()
            .is_some_and(|c| c != record.conv)
        {
            return false;
        }
        let (from, to, room, text, rules) = match &record.body {
            Body::Message {
                from,
                to,
                room,
                text,
                verdict,
                ..
            } => (
                Some(from),
                to.as_slice(),
                room.as_deref(),
                Some(text.as_str()),
                verdict.rules.as_slice(),
            ),
            Body::FileOffer {
                from,
                to,
                name,
                verdict,
                ..
            } => (
                Some(from),
                to.as_slice(),
                None,
                Some(name.as_str()),
                verdict.rules.as_slice(),
            ),
            Body::Presence {
                who, room, text, ..
            } => (
                Some(who),
                &[][..],
                room.as_deref(),
                text.as_deref(),
                &[][..],
            ),
            _ => (None, &[][..], None, None, &[][..]),
        };
        let person_ok = self.person.as_deref().is_none_or(|p| {
            from.and_then(|f| f.person.as_deref())
                .is_some_and(|q| eq(p, q))
        });
        let handle_ok = self
            .handle
            .as_deref()
            .is_none_or(|h| from.is_some_and(|f| eq(&f.handle, h)) || to.iter().any(|t| eq(t, h)));
        let room_ok = self
            .room
            .as_deref()
            .is_none_or(|r| room.is_some_and(|q| eq(r, q)));
        let text_ok = self.text.as_deref().is_none_or(|t| {
            text.is_some_and(|body| body.to_lowercase().contains(&t.to_lowercase()))
        });
        let rule_ok = self.rule.as_deref().is_none_or(|r| {
            rules
                .iter()
                .any(|q| q == r || q.split('/').next() == Some(r))
        });
        person_ok && handle_ok && room_ok && text_ok && rule_ok
    }

    fn overlaps(&self, manifest: &Manifest) -> bool {
        self.from.is_none_or(|from| manifest.last_ts >= from)
            && self.to.is_none_or(|to| manifest.first_ts <= to)
    }
}

/// Every manifest of `tenant`, ordered by writer and chain position.
pub async fn manifests(
    store: &Store,
    prefix: &str,
    tenant: &str,
) -> Result<Vec<Manifest>, ArchiveError> {
    let mut manifests = Vec::new();
    for key in store
        .list(&Layout::manifests_prefix(prefix, tenant))
        .await?
    {
        let bytes = store.get(&key).await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Store {
                key: key.clone(),
                message: format!("unreadable manifest: {e}"),
            })?;
        manifests.push(manifest);
    }
    manifests.sort_by(|a, b| (&a.writer, a.index).cmp(&(&b.writer, b.index)));
    Ok(manifests)
}

/// The records matching `query`; `progress(done, total)` is called after each segment read.
pub async fn search(
    store: &Store,
    prefix: &str,
    tenant: &str,
    query: &Query,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Record>, ArchiveError> {
    let wanted: Vec<Manifest> = manifests(store, prefix, tenant)
        .await?
        .into_iter()
        .filter(|m| query.overlaps(m))
        .collect();
    let mut found = Vec::new();
    for (index, manifest) in wanted.iter().enumerate() {
        let body = store.get(&manifest.key).await?;
        if sha256_hex(&body) != manifest.sha256 {
            return Err(ArchiveError::Store {
                key: manifest.key.clone(),
                message:
                    "the segment does not match its manifest's SHA-256: run `imgate archive verify`"
                        .into(),
            });
        }
        let records = open_segment(&body).map_err(|message| ArchiveError::Store {
            key: manifest.key.clone(),
            message,
        })?;
        found.extend(records.into_iter().filter(|r| query.matches(r)));
        progress(index + 1, wanted.len());
    }
    found.sort_by(|a, b| (a.ts, &a.writer, a.seq).cmp(&(b.ts, &b.writer, b.seq)));
    Ok(found)
}
