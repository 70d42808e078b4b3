//! Credentials: PEM private keys and cloud or SaaS access tokens. One Aho-Corasick pass finds
//! the fixed prefixes; each hit is then checked against its format (length, alphabet,
//! structure, and for keys a base64 body).

use aho_corasick::{AhoCorasick, MatchKind};
use imgate_crds::policy::Detector;

use super::{Span, boundary_after, boundary_before};

const PREFIXES: [(&str, Detector); 16] = [
    ("-----BEGIN ", Detector::PrivateKey),
    ("AKIA", Detector::AwsAccessKey),
    ("ASIA", Detector::AwsAccessKey),
    ("ABIA", Detector::AwsAccessKey),
    ("ACCA", Detector::AwsAccessKey),
    ("AIza", Detector::GoogleApiKey),
    ("ghp_", Detector::GithubToken),
    ("gho_", Detector::GithubToken),
    ("ghu_", Detector::GithubToken),
    ("ghs_", Detector::GithubToken),
    ("ghr_", Detector::GithubToken),
    ("github_pat_", Detector::GithubToken),
    ("xoxb-", Detector::SlackToken),
    ("xoxp-", Detector::SlackToken),
    ("xoxa-", Detector::SlackToken),
    ("xoxr-", Detector::SlackToken),
];

/// The prefix automaton for the enabled credential detectors.
#[derive(Debug, Clone)]
pub(super) struct SecretScanner {
    automaton: AhoCorasick,
    detectors: Vec<Detector>,
}

impl SecretScanner {
    /// `None` when no credential detector is enabled.
    pub(super) fn new(enabled: &[Detector]) -> Option<Self> {
        let chosen: Vec<(&str, Detector)> = PREFIXES
            .iter()
            .copied()
            .filter(|(_, d)| enabled.contains(d))
            .collect();
        if chosen.is_empty() {
            return None;
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(chosen.iter().map(|(p, _)| p))
            .unwrap_or_else(|error| unreachable!("fixed prefixes always compile: {error}"));
        Some(Self {
            automaton,
            detectors: chosen.into_iter().map(|(_, d)| d).collect(),
        })
    }

    pub(super) fn scan(&self, bytes: &[u8], found: &mut impl FnMut(Detector, Span)) {
        let mut resume = 0;
        for hit in self.automaton.find_iter(bytes) {
            if hit.start() < resume {
                continue;
            }
            let detector = self.detectors[hit.pattern().as_usize()];
            let end = match detector {
                Detector::PrivateKey => private_key(bytes, hit.start()),
                Detector::AwsAccessKey => token(bytes, hit.start(), 4, 16..=16, |b| {
                    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
                }),
                Detector::GoogleApiKey => token(bytes, hit.start(), 4, 35..=35, |b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
                }),
                Detector::GithubToken if bytes[hit.start()..].starts_with(b"github_pat_") => {
                    token(bytes, hit.start(), 11, 82..=82, |b| {
                        b.is_ascii_alphanumeric() || b == b'_'
                    })
                }
                Detector::GithubToken => token(bytes, hit.start(), 4, 36..=36, |b| {
                    b.is_ascii_alphanumeric()
                }),
                Detector::SlackToken => slack(bytes, hit.start()),
                _ => None,
            };
            if let Some(end) = end {
                found(
                    detector,
                    Span {
                        start: hit.start(),
                        end,
                    },
                );
                resume = end;
            }
        }
    }
}

/// A token of `prefix_len` fixed bytes then a body of `body_len` bytes from `alphabet`,
/// standing alone as a word.
fn token(
    bytes: &[u8],
    start: usize,
    prefix_len: usize,
    body_len: std::ops::RangeInclusive<usize>,
    alphabet: impl Fn(u8) -> bool,
) -> Option<usize> {
    if !boundary_before(bytes, start) {
        return None;
    }
    let body = bytes[start + prefix_len..]
        .iter()
        .take_while(|b| alphabet(**b))
        .count();
    let end = start + prefix_len + body;
    (body_len.contains(&body)
        && boundary_after(bytes, end)
        && (end >= bytes.len() || !alphabet(bytes[end])))
    .then_some(end)
}

/// `xoxb-<digits>-<digits>-<alphanumerics>` and the like.
fn slack(bytes: &[u8], start: usize) -> Option<usize> {
    if !boundary_before(bytes, start) {
        return None;
    }
    let rest = &bytes[start + 5..];
    let length = rest
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
        .count();
    let parts: Vec<&[u8]> = rest[..length].split(|b| *b == b'-').collect();
    let numeric = |p: &[u8]| p.len() >= 8 && p.iter().all(u8::is_ascii_digit);
    let valid = parts.len() >= 3
        && numeric(parts[0])
        && numeric(parts[1])
        && parts
            .last()
            .is_some_and(|p| p.len() >= 16 && p.iter().all(u8::is_ascii_alphanumeric));
    valid.then_some(start + 5 + length)
}

/// `-----BEGIN … PRIVATE KEY-----` followed by a base64 body of at least 32 characters;
/// the span runs to the end of the matching `-----END …-----` line when there is one.
fn private_key(bytes: &[u8], start: usize) -> Option<usize> {
    let header_start = start + "-----BEGIN ".len();
    let label_len = bytes[header_start..]
        .iter()
        .take(64)
        .position(|b| *b == b'-')?;
    let label = &bytes[header_start..header_start + label_len];
    let header_end = header_start + label_len;
    if !bytes[header_end..].starts_with(b"-----")
        || !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
    {
        return None;
    }
    let body_start = header_end + 5;
    let body_end =
        find(&bytes[body_start..], b"-----END ").map_or(bytes.len(), |at| body_start + at);
    let base64 = bytes[body_start..body_end]
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .count();
    if base64 < 32 {
        return None;
    }
    if body_end == bytes.len() {
        return Some(body_end);
    }
    let footer = &bytes[body_end + "-----END ".len()..];
    let close = footer
        .iter()
        .take(80)
        .position(|b| *b == b'-')
        .filter(|at| footer[*at..].starts_with(b"-----"));
    Some(close.map_or(body_end, |at| body_end + "-----END ".len() + at + 5))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
