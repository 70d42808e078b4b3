//! Keyword rules: every keyword of every rule of a tenant in one Aho-Corasick automaton,
//! matched against normalised text (see [`super::normalize`]).
//!
//! Invariants: a keyword shared by several rules is stored once and reported for each rule;
//! matching is overlapping, so one keyword inside another never hides it; a whole-word
//! keyword matches only where its word-character edges are not glued to other word characters.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::normalize::normalize;

/// Most keywords compiled to a full DFA.
const DFA_MAX_KEYWORDS: usize = 5_000;

/// A rule index into the compiled policy's content rules.
pub type RuleId = u32;

/// Collects keywords before building the automaton.
#[derive(Debug, Default)]
pub struct KeywordBuilder {
    patterns: Vec<String>,
    by_text: HashMap<String, usize>,
    owners: Vec<Vec<(RuleId, bool)>>,
}

/// Why a keyword was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeywordError {
    /// Normalisation removed every character.
    #[error(
        "keyword {0:?} is empty once normalised (only spaces or invisible characters), so it can never match"
    )]
    Empty(String),
    /// The automaton could not be built.
    #[error("the keyword automaton could not be built: {0}")]
    Build(String),
}

impl KeywordBuilder {
    /// Adds `keyword` for `rule`.
    pub fn add(
        &mut self,
        rule: RuleId,
        keyword: &str,
        whole_word: bool,
    ) -> Result<(), KeywordError> {
        let normalized = normalize(keyword);
        if normalized.is_empty() {
            return Err(KeywordError::Empty(keyword.to_owned()));
        }
        let index = *self.by_text.entry(normalized.clone()).or_insert_with(|| {
            self.patterns.push(normalized);
            self.owners.push(Vec::new());
            self.patterns.len() - 1
        });
        if !self.owners[index].contains(&(rule, whole_word)) {
            self.owners[index].push((rule, whole_word));
        }
        Ok(())
    }

    /// Builds the automaton.
    pub fn build(self) -> Result<KeywordIndex, KeywordError> {
        if self.patterns.is_empty() {
            return Ok(KeywordIndex {
                automaton: None,
                owners: Vec::new(),
                edges: Vec::new(),
            });
        }
        // A full DFA scans fastest (one transition per byte) but its size grows with the
        // keyword count; past that bound the library's choice (a compact NFA) builds faster.
        let kind = (self.patterns.len() <= DFA_MAX_KEYWORDS).then_some(AhoCorasickKind::DFA);
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(kind)
            .build(&self.patterns)
            .map_err(|e| KeywordError::Build(e.to_string()))?;
        let edges = self
            .patterns
            .iter()
            .map(|p| {
                (
                    p.chars().next().is_some_and(is_word_char),
                    p.chars().next_back().is_some_and(is_word_char),
                )
            })
            .collect();
        Ok(KeywordIndex {
            automaton: Some(automaton),
            owners: self.owners,
            edges,
        })
    }
}

/// The compiled keyword automaton.
#[derive(Debug, Clone)]
pub struct KeywordIndex {
    automaton: Option<AhoCorasick>,
    owners: Vec<Vec<(RuleId, bool)>>,
    /// Whether each pattern starts / ends with a word character.
    edges: Vec<(bool, bool)>,
}

impl KeywordIndex {
    /// Number of distinct keywords.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// True when there are no keywords.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Calls `found(rule, start, end)` for every rule whose keyword occurs in `normalized`,
    /// with byte offsets into `normalized`.
    pub fn scan(&self, normalized: &str, found: &mut impl FnMut(RuleId, usize, usize)) {
        let Some(automaton) = &self.automaton else {
            return;
        };
        for hit in automaton.find_overlapping_iter(normalized) {
            let pattern = hit.pattern().as_usize();
            let (word_start, word_end) = self.edges[pattern];
            let separated = (!word_start || !word_char_before(normalized, hit.start()))
                && (!word_end || !word_char_after(normalized, hit.end()));
            for &(rule, whole_word) in &self.owners[pattern] {
                if separated || !whole_word {
                    found(rule, hit.start(), hit.end());
                }
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_char_before(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_some_and(is_word_char)
}

fn word_char_after(text: &str, at: usize) -> bool {
    text[at..].chars().next().is_some_and(is_word_char)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::policy::normalize::Normalized;

    fn rules_found(index: &KeywordIndex, text: &str) -> Vec<(RuleId, String)> {
        let mut n = Normalized::default();
        n.normalize(text);
        let mut out = Vec::new();
        index.scan(n.as_str(), &mut |rule, start, end| {
            let span = n.original_span(start, end);
            out.push((rule, text[span.start..span.end].to_owned()));
        });
        out
    }

    #[test]
    fn whole_word_and_substring_rules_share_keywords() {
        let mut builder = KeywordBuilder::default();
        builder.add(0, "falcon", true).expect("ok");
        builder.add(1, "Falcon", false).expect("ok");
        builder.add(2, "project falcon", true).expect("ok");
        let index = builder.build().expect("build");
        assert_eq!(index.len(), 2);
        assert_eq!(
            rules_found(&index, "falconry"),
            vec![(1, "falcon".to_owned())]
        );
        let found = rules_found(&index, "about PROJECT fаlcon.");
        assert!(found.contains(&(0, "fаlcon".to_owned())), "{found:?}");
        assert!(
            found.contains(&(2, "PROJECT fаlcon".to_owned())),
            "{found:?}"
        );
    }

    #[test]
    fn keywords_with_punctuation_edges_still_match() {
        let mut builder = KeywordBuilder::default();
        builder.add(0, "$GME", true).expect("ok");
        let index = builder.build().expect("build");
        assert_eq!(
            rules_found(&index, "buy$gme now"),
            vec![(0, "$gme".to_owned())]
        );
        assert!(rules_found(&index, "buy $gmex").is_empty());
    }

    #[test]
    fn invisible_keywords_are_refused() {
        let mut builder = KeywordBuilder::default();
        assert!(matches!(
            builder.add(0, " \u{200B} ", true),
            Err(KeywordError::Empty(_))
        ));
    }
}
