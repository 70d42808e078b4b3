//! URLs in messages: extraction from text and matching of their hosts against domain globs.
//!
//! Invariants: extraction is linear and allocation-free when the text has no `://` or `www.`;
//! hosts are compared lower-cased, without user info, port or trailing dot.

use aho_corasick::{AhoCorasick, MatchKind};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::verdict::Span;

/// Finds URLs in text.
#[derive(Debug, Clone)]
pub struct UrlFinder {
    starts: AhoCorasick,
}

impl Default for UrlFinder {
    fn default() -> Self {
        let starts = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(["https://", "http://", "www."])
            .unwrap_or_else(|error| unreachable!("fixed patterns always compile: {error}"));
        Self { starts }
    }
}

impl UrlFinder {
    /// Calls `found(span)` for each URL in `text`.
    pub fn find(&self, text: &str, found: &mut impl FnMut(Span)) {
        let bytes = text.as_bytes();
        let mut resume = 0;
        for hit in self.starts.find_iter(text) {
            if hit.start() < resume
                || (hit.start() > 0 && bytes[hit.start() - 1].is_ascii_alphanumeric())
            {
                continue;
            }
            let length = text[hit.start()..]
                .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '`'))
                .unwrap_or(text.len() - hit.start());
            let mut end = hit.start() + length;
            while end > hit.end()
                && matches!(
                    bytes[end - 1],
                    b'.' | b',' | b')' | b';' | b':' | b'!' | b'?'
                )
            {
                end -= 1;
            }
            if end > hit.end() {
                found(Span {
                    start: hit.start(),
                    end,
                });
                resume = end;
            }
        }
    }
}

/// The host of a URL (`https://user@Bad.Example:443/x` → `bad.example`), lower-cased.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next()?
    } else {
        host_port.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Domain globs: `bad.example` matches that host only, `*.bad.example` any subdomain.
#[derive(Debug, Clone)]
pub struct DomainSet {
    globs: GlobSet,
}

impl DomainSet {
    /// Compiles globs; returns the first glob that fails with its error.
    pub fn new<'a>(globs: impl IntoIterator<Item = &'a String>) -> Result<Self, (String, String)> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            let compiled = GlobBuilder::new(&glob.to_ascii_lowercase())
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map_err(|e| (glob.clone(), e.kind().to_string()))?;
            builder.add(compiled);
        }
        let globs = builder
            .build()
            .map_err(|e| (String::new(), e.to_string()))?;
        Ok(Self { globs })
    }

    /// True when `host` (lower-case) matches a glob.
    pub fn matches(&self, host: &str) -> bool {
        self.globs.is_match(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        UrlFinder::default().find(text, &mut |s| out.push(&text[s.start..s.end]));
        out
    }

    #[test]
    fn finds_urls_in_chat() {
        assert_eq!(
            urls("see https://x.bad.example/a?b=1, and www.ok.example."),
            ["https://x.bad.example/a?b=1", "www.ok.example"]
        );
        assert_eq!(urls("HTTP://LOUD.EXAMPLE/"), ["HTTP://LOUD.EXAMPLE/"]);
        assert!(urls("no links, just https:// alone").is_empty());
        assert!(urls("awww.nope").is_empty());
    }

    #[test]
    fn hosts_are_extracted() {
        assert_eq!(
            host_of("https://user:pw@Bad.Example.:8443/x").as_deref(),
            Some("bad.example")
        );
        assert_eq!(
            host_of("www.ok.example/path").as_deref(),
            Some("www.ok.example")
        );
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("[::1]"));
    }

    #[test]
    fn domain_globs() {
        let set = DomainSet::new(&["*.bad.example".to_owned(), "evil.example".to_owned()])
            .expect("globs");
        assert!(set.matches("x.bad.example"));
        assert!(set.matches("a.b.bad.example"));
        assert!(!set.matches("bad.example"));
        assert!(set.matches("evil.example"));
        assert!(!set.matches("notevil.example"));
    }
}
