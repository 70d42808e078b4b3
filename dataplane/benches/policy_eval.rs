//! Policy evaluation on chat-like traffic, side by side with a reference.
//!
//! Corpus: 10,000 messages whose lengths are log-normal with a mean of about 40 characters,
//! built from everyday chat words with occasional numbers, links, keyword hits and card
//! numbers. Policy: 1,000 keywords, 20 regular expressions and every built-in detector.
//! References: a bare Aho-Corasick scan of the same keywords over the same messages (no
//! normalisation, no regexes, no detectors), and building that bare automaton for the
//! compile benchmark. Run: `cargo bench -p imgate-dataplane --bench policy_eval`.

mod common;

use std::hint::black_box;

use aho_corasick::AhoCorasick;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgate_crds::IMPolicy;
use imgate_crds::policy::{
    ContentAction, ContentMatch, ContentRule, Detector, IMPolicySpec, Severity,
};
use imgate_dataplane::inspect::policy::{CompiledPolicy, PolicyState};

use common::{MESSAGES, corpus, keywords};

const REGEXES: [&str; 20] = [
    r"(?i)\bwire\s+[0-9]+k\b",
    r"(?i)\b(buy|sell)\s+[0-9][0-9,]{2,}\s+(shares|contracts)\b",
    r"(?i)\bpassword\s*[:=]\s*\S+",
    r"\b[A-Z]{2}[0-9]{6,8}\b",
    r"\+?[0-9]{1,3}[ -]?\(?[0-9]{3}\)?[ -][0-9]{3}[ -][0-9]{4}",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"(?i)\bguarantee(d)?\s+(profit|return)s?\b",
    r"(?i)\binside\s+info(rmation)?\b",
    r"(?i)\bfront[- ]?run(ning)?\b",
    r"(?i)\bdelete\s+(this|these)\s+messages?\b",
    r"(?i)\bCUSIP\s*[:#]?\s*[0-9A-Z]{9}\b",
    r"\b[0-9]{3}-[0-9]{3}-[0-9]{4}\b",
    r"(?i)\bacct\s*#?\s*[0-9]{6,12}\b",
    r"(?i)\brouting\s*#?\s*[0-9]{9}\b",
    r"(?i)\bswift\s*:?\s*[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?\b",
    r"(?i)\b(confidential|privileged)\b",
    r"(?i)\bpump\s+and\s+dump\b",
    r"(?i)\bmove\s+it\s+off\s+(the\s+)?books\b",
    r"(?i)\bcrypto\s+wallet\s+[13][a-km-zA-HJ-NP-Z1-9]{25,34}\b",
    r"(?i)\bssn\s*[:#]?\s*[0-9]{3}-?[0-9]{2}-?[0-9]{4}\b",
];

fn rule(name: String, matcher: ContentMatch, action: ContentAction) -> ContentRule {
    ContentRule {
        name,
        matcher,
        action,
        directions: Vec::new(),
        severity: Severity::Medium,
        notify: None,
    }
}

fn policy(keywords: &[String]) -> IMPolicy {
    let empty = ContentMatch {
        keywords: None,
        whole_word: true,
        regex: None,
        detector: None,
    };
    let mut content: Vec<ContentRule> = keywords
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| {
            rule(
                format!("keywords-{i}"),
                ContentMatch {
                    keywords: Some(chunk.to_vec()),
                    ..empty.clone()
                },
                ContentAction::Block,
            )
        })
        .collect();
    content.extend(REGEXES.iter().enumerate().map(|(i, r)| {
        rule(
            format!("regex-{i}"),
            ContentMatch {
                regex: Some((*r).to_owned()),
                ..empty.clone()
            },
            ContentAction::Alert,
        )
    }));
    content.extend(Detector::ALL.iter().enumerate().map(|(i, d)| {
        rule(
            format!("detector-{i}"),
            ContentMatch {
                detector: Some(*d),
                ..empty.clone()
            },
            ContentAction::Redact,
        )
    }));
    let spec = IMPolicySpec {
        tenant_ref: "bench".into(),
        mode: Default::default(),
        priority: 0,
        subjects: Default::default(),
        protocols: None,
        file_transfer: None,
        content,
        urls: None,
        disclaimer: None,
        rate_limit: None,
        worm: None,
        quarantine_for: None,
    };
    IMPolicy::new("bench", spec)
}

fn evaluation(c: &mut Criterion) {
    let words = keywords(1_000, 1);
    let events = corpus(&words);
    let compiled =
        CompiledPolicy::compile("bench", &[policy(&words)]).expect("benchmark policy compiles");
    let reference = AhoCorasick::new(&words).expect("reference automaton");
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("imgate: 1,000 keywords + 20 regexes + all detectors", |b| {
        let mut state = PolicyState::default();
        b.iter(|| {
            for event in &events {
                black_box(compiled.evaluate(event, &mut state));
            }
        })
    });
    group.bench_function("reference: bare Aho-Corasick, same 1,000 keywords", |b| {
        b.iter(|| {
            for event in &events {
                black_box(
                    reference
                        .find_overlapping_iter(event.text().unwrap_or_default())
                        .count(),
                );
            }
        })
    });
    group.finish();
}

fn compilation(c: &mut Criterion) {
    let words = keywords(10_000, 2);
    let mut group = c.benchmark_group("compile");
    group.bench_function("imgate: policy with 10,000 keywords", |b| {
        let spec = policy(&words);
        b.iter(|| {
            black_box(
                CompiledPolicy::compile("bench", std::slice::from_ref(&spec)).expect("compiles"),
            )
        })
    });
    group.bench_function("reference: bare Aho-Corasick of 10,000 keywords", |b| {
        b.iter(|| black_box(AhoCorasick::new(&words).expect("builds")))
    });
    group.finish();
}

criterion_group!(benches, evaluation, compilation);
criterion_main!(benches);
