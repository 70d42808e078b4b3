//! `verify`: walks every writer's chain of manifests and segments and reports each missing,
//! altered or reordered segment, and every gap the writers recorded (times their logs
//! refused records: `gap` records).
//!
//! Invariants: every manifest is checked against its predecessor (index, sequence numbers,
//! `prev_sha256`) and against its segment (present, SHA-256, records and their sequence
//! numbers); segments without a manifest are reported too; a problem is never skipped. A
//! chain whose last segments were removed together with their manifests cannot be told from
//! a shorter one: Object Lock is what prevents that.

use std::collections::{BTreeMap, BTreeSet};

use super::error::ArchiveError;
use super::record::{Body, Record};
use super::segment::{GENESIS, Layout, Manifest, open_segment, sha256_hex};
use super::store::Store;

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Writers (chains) found.
    pub writers: usize,
    /// Segments checked.
    pub segments: usize,
    /// Records checked.
    pub records: u64,
    /// Every problem found, each naming the object.
    pub problems: Vec<String>,
    /// Every recorded gap: when a writer's log refused records, why and how many. A gap is
    /// not a problem of the archive (nothing in it is missing or altered) but of what it
    /// covers.
    pub gaps: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the archive of `tenant` under `prefix`; `progress(done, total)` is called after
/// each segment.
pub async fn verify(
    store: &Store,
    prefix: &str,
    tenant: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<VerifyReport, ArchiveError> {
    let mut report = VerifyReport::default();
    let manifest_keys = store
        .list(&Layout::manifests_prefix(prefix, tenant))
        .await?;
    let mut chains: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
    for key in &manifest_keys {
        match store
            .get(key)
            .await
            .map(|bytes| serde_json::from_slice::<Manifest>(&bytes))
        {
            Ok(Ok(manifest)) => chains
                .entry(manifest.writer.clone())
                .or_default()
                .push(manifest),
            Ok(Err(error)) => report
                .problems
                .push(format!("{key}: unreadable manifest: {error}")),
            Err(error) => report.problems.push(format!("{key}: {error}")),
        }
    }
    report.writers = chains.len();
    let total = chains.values().map(Vec::len).sum();
    let mut listed: BTreeSet<String> = store
        .list(&format!("{prefix}tenant={tenant}/"))
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".jsonl.zst"))
        .collect();
    let mut done = 0;
    for (writer, mut chain) in chains {
        chain.sort_by_key(|m| m.index);
        let mut previous: Option<&Manifest> = None;
        for manifest in &chain {
            listed.remove(&manifest.key);
            check_link(&writer, previous, manifest, &mut report.problems);
            check_segment(store, manifest, &mut report).await;
            previous = Some(manifest);
            done += 1;
            progress(done, total);
        }
    }
    for orphan in listed {
        report
            .problems
            .push(format!("{orphan}: segment without a manifest"));
    }
    Ok(report)
}

/// A `gap` record, told: `writer W: from SINCE to TS, N record(s) refused (what became of
/// their events)[, records A..=B written late]: REASON (record S)`.
fn describe_gap(record: &Record) -> Option<String> {
    let Body::Gap {
        since,
        reason,
        refused,
        on_failure,
        late,
    } = &record.body
    else {
        return None;
    };
    let events = match on_failure.as_str() {
        "pass" => "their events went on unrecorded",
        _ => "their events were blocked",
    };
    let late = late.map_or_else(String::new, |[first, last]| {
        format!(", records {first}..={last} written late")
    });
    Some(format!(
        "writer {}: from {since} to {}, {refused} record(s) refused ({events}){late}: {reason} (record {})",
        record.writer,
        record
            .ts
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        record.seq
    ))
}

fn check_link(
    writer: &str,
    previous: Option<&Manifest>,
    manifest: &Manifest,
    problems: &mut Vec<String>,
) {
    let (index, first, head) = previous.map_or((1, 1, GENESIS), |p| {
        (p.index + 1, p.last_seq + 1, p.sha256.as_str())
    });
    if manifest.index != index {
        problems.push(format!(
            "writer {writer}: segment {} follows segment {}: segments {index}..{} are missing",
            manifest.index,
            index - 1,
            manifest.index - 1
        ));
    }
    if manifest.first_seq != first {
        problems.push(format!("writer {writer}: {} starts at record {}, expected {first}: records are missing or repeated", manifest.key, manifest.first_seq));
    }
    if manifest.prev_sha256 != head {
        problems.push(format!("writer {writer}: {} does not chain to the segment before it (reordered, replaced or missing)", manifest.key));
    }
}

async fn check_segment(store: &Store, manifest: &Manifest, report: &mut VerifyReport) {
    let key = &manifest.key;
    let body = match store.get(key).await {
        Ok(body) => body,
        Err(error) => {
            report
                .problems
                .push(format!("{key}: segment missing: {error}"));
            return;
        }
    };
    report.segments += 1;
    let actual = sha256_hex(&body);
    if actual != manifest.sha256 {
        report.problems.push(format!(
            "{key}: altered: SHA-256 {actual}, manifest says {}",
            manifest.sha256
        ));
        return;
    }
    match open_segment(&body) {
        Ok(records) => {
            report.records += records.len() as u64;
            report.gaps.extend(records.iter().filter_map(describe_gap));
            let consecutive = records
                .iter()
                .enumerate()
                .all(|(i, r)| r.seq == manifest.first_seq + i as u64);
            if records.len() as u64 != manifest.records
                || !consecutive
                || records.last().map(|r| r.seq) != Some(manifest.last_seq)
            {
                report.problems.push(format!(
                    "{key}: holds {} records that do not match the manifest ({}..={})",
                    records.len(),
                    manifest.first_seq,
                    manifest.last_seq
                ));
            }
        }
        Err(error) => report.problems.push(format!("{key}: unreadable: {error}")),
    }
}
