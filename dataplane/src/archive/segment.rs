//! Segments: runs of consecutive log records as compressed JSON lines (`.jsonl.zst`), each
//! with a manifest entry that chains it to the previous segment of the same writer.
//!
//! Keys (Hive-style, so DuckDB, Athena and Spark read them with no imgate code):
//! `{prefix}tenant={t}/date={YYYY-MM-DD}/hour={HH}/writer={w}/{first:020}-{last:020}.jsonl.zst`
//! and `{prefix}tenant={t}/_manifests/writer={w}/{first:020}.json`.
//!
//! Invariants: a segment holds records `first_seq..=last_seq` with no gap, each on its own
//! line in sequence order; the manifest's `sha256` is the SHA-256 of the compressed bytes
//! exactly as stored, and `prev_sha256` that of the writer's previous segment (64 zeros for
//! the first), so the chain proves completeness and order; sealing is deterministic, so a
//! segment rebuilt after a crash has the same bytes and key.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::Record;

/// The manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// `prev_sha256` of a writer's first segment.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// zstd level for segments.
pub const ZSTD_LEVEL: i32 = 9;

/// A manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub v: u32,
    /// The tenant.
    pub tenant: String,
    /// The writer.
    pub writer: String,
    /// Position in the writer's chain, from 1.
    pub index: u64,
    /// The segment's key.
    pub key: String,
    /// SHA-256 of the stored (compressed) segment, hex.
    pub sha256: String,
    /// SHA-256 of the writer's previous segment, hex.
    pub prev_sha256: String,
    /// Stored size in bytes.
    pub bytes: u64,
    /// Records in the segment.
    pub records: u64,
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// Timestamp of the first record.
    pub first_ts: DateTime<Utc>,
    /// Timestamp of the last record.
    pub last_ts: DateTime<Utc>,
}

/// A sealed segment ready to ship.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The compressed JSON lines.
    pub body: Vec<u8>,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Where a writer's segments live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Key prefix (empty, or ending in `/`).
    pub prefix: String,
    /// The tenant.
    pub tenant: String,
    /// The writer.
    pub writer: String,
}

impl Layout {
    /// The key of the segment holding `first..=last`, starting at `ts`.
    pub fn segment_key(&self, ts: DateTime<Utc>, first: u64, last: u64) -> String {
        format!(
            "{}tenant={}/date={}/hour={}/writer={}/{first:020}-{last:020}.jsonl.zst",
            self.prefix,
            self.tenant,
            ts.format("%Y-%m-%d"),
            ts.format("%H"),
            self.writer
        )
    }

    /// The key of the manifest of the segment starting at `first`.
    pub fn manifest_key(&self, first: u64) -> String {
        format!(
            "{}tenant={}/_manifests/writer={}/{first:020}.json",
            self.prefix, self.tenant, self.writer
        )
    }

    /// A key prefix as the layout uses it: empty, or ending in `/` (`im` becomes `im/`).
    pub fn prefix(text: &str) -> String {
        let trimmed = text.trim_start_matches('/');
        if trimmed.is_empty() || trimmed.ends_with('/') {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/")
        }
    }

    /// The prefix under which all of this tenant's manifests live.
    pub fn manifests_prefix(prefix: &str, tenant: &str) -> String {
        format!("{prefix}tenant={tenant}/_manifests/")
    }
}

/// The raw material of a segment: consecutive records as JSON lines, compressed as they are
/// added, so that sealing holds the compressed segment and not the records.
pub struct SegmentInput {
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    /// Bytes of JSON lines added, before compression.
    pub line_bytes: u64,
    /// Number of records.
    pub records: u64,
    /// First sequence number.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// Timestamp of the first record.
    pub first_ts: DateTime<Utc>,
    /// Timestamp of the last record.
    pub last_ts: DateTime<Utc>,
}

impl Default for SegmentInput {
    fn default() -> Self {
        Self {
            encoder: zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)
                .unwrap_or_else(|error| unreachable!("a zstd level in range: {error}")),
            line_bytes: 0,
            records: 0,
            first_seq: 0,
            last_seq: 0,
            first_ts: DateTime::default(),
            last_ts: DateTime::default(),
        }
    }
}

impl SegmentInput {
    /// Adds the next record's JSON (as stored in the log).
    pub fn push(&mut self, seq: u64, ts: DateTime<Utc>, json: &[u8]) {
        if self.records == 0 {
            self.first_seq = seq;
            self.first_ts = ts;
        }
        self.last_seq = seq;
        self.last_ts = ts;
        self.records += 1;
        self.line_bytes += json.len() as u64 + 1;
        for bytes in [json, b"\n"] {
            self.encoder
                .write_all(bytes)
                .unwrap_or_else(|error| unreachable!("compressing into memory: {error}"));
        }
    }

    /// The input for `records`, in order.
    pub fn from_records(records: &[Record]) -> Self {
        let mut input = Self::default();
        for record in records {
            input.push(record.seq, record.ts, &record.to_json());
        }
        input
    }
}

/// Seals `input` (non-empty) as segment number `index` after `prev_sha256`.
pub fn seal(layout: &Layout, index: u64, prev_sha256: &str, input: SegmentInput) -> Sealed {
    let body = input
        .encoder
        .finish()
        .unwrap_or_else(|error| unreachable!("compressing into memory: {error}"));
    let manifest = Manifest {
        v: MANIFEST_VERSION,
        tenant: layout.tenant.clone(),
        writer: layout.writer.clone(),
        index,
        key: layout.segment_key(input.first_ts, input.first_seq, input.last_seq),
        sha256: sha256_hex(&body),
        prev_sha256: prev_sha256.to_owned(),
        bytes: body.len() as u64,
        records: input.records,
        first_seq: input.first_seq,
        last_seq: input.last_seq,
        first_ts: input.first_ts,
        last_ts: input.last_ts,
    };
    Sealed { body, manifest }
}

/// SHA-256, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Decompresses a segment and parses its records; errors name the line.
pub fn open_segment(body: &[u8]) -> Result<Vec<Record>, String> {
    let mut lines = Vec::new();
    zstd::stream::copy_decode(body, &mut lines).map_err(|e| format!("not a zstd stream: {e}"))?;
    lines
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(n, line)| serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::record::tests::message;

    fn layout() -> Layout {
        Layout {
            prefix: String::new(),
            tenant: "acme".into(),
            writer: "dp-0".into(),
        }
    }

    #[test]
    fn prefixes_are_empty_or_end_in_a_slash() {
        assert_eq!(Layout::prefix(""), "");
        assert_eq!(Layout::prefix("im"), "im/");
        assert_eq!(Layout::prefix("im/"), "im/");
        assert_eq!(Layout::prefix("/a/b"), "a/b/");
    }

    #[test]
    fn sealing_is_deterministic_and_reversible() {
        let records: Vec<Record> = (1..=50).map(|i| message(i, "hello there")).collect();
        let a = seal(&layout(), 1, GENESIS, SegmentInput::from_records(&records));
        let b = seal(&layout(), 1, GENESIS, SegmentInput::from_records(&records));
        assert_eq!(a.body, b.body);
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(
            a.manifest.key,
            "tenant=acme/date=2025-11-24/hour=16/writer=dp-0/00000000000000000001-00000000000000000050.jsonl.zst"
        );
        assert_eq!(
            (
                a.manifest.first_seq,
                a.manifest.last_seq,
                a.manifest.records
            ),
            (1, 50, 50)
        );
        assert_eq!(open_segment(&a.body).expect("opens"), records);
    }

    #[test]
    fn damage_is_reported() {
        let sealed = seal(
            &layout(),
            1,
            GENESIS,
            SegmentInput::from_records(&[message(1, "x")]),
        );
        assert!(open_segment(b"not zstd").is_err());
        let garbage = zstd::bulk::compress(b"{\"v\":1}\nnot json\n", 3).expect("compress");
        let error = open_segment(&garbage).expect_err("bad lines");
        assert!(error.starts_with("line 1:"), "{error}");
        assert_eq!(sealed.manifest.sha256, sha256_hex(&sealed.body));
    }
}
