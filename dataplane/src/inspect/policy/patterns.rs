//! Regular-expression rules, matched against the original text. One `RegexSet` pass tells
//! which expressions match at all; only those are run again for their spans, so a message
//! that matches nothing costs one scan however many expressions there are.
//!
//! Invariants: expressions are compiled with size limits (a hostile policy cannot exhaust
//! memory), matching is linear in the text (the `regex` crate never backtracks), and empty
//! matches are never reported.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::keywords::RuleId;
use super::verdict::Span;

/// Largest compiled program for one expression.
const SIZE_LIMIT: usize = 1 << 20;
/// Largest lazy-DFA cache for one expression.
const DFA_SIZE_LIMIT: usize = 2 << 20;

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not valid syntax, or too large.
    #[error("invalid regular expression: {0}")]
    Invalid(String),
    /// Can never match anything.
    #[error("the regular expression can never match anything")]
    NeverMatches,
    /// Matches only the empty string, so it never finds anything.
    #[error("the regular expression only matches empty text, so it never finds anything")]
    OnlyEmpty,
}

/// Checks one expression and compiles it.
pub fn compile(pattern: &str) -> Result<Regex, PatternError> {
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|e| PatternError::Invalid(e.to_string()))?;
    let properties = hir.properties();
    match (properties.minimum_len(), properties.maximum_len()) {
        (None, _) => return Err(PatternError::NeverMatches),
        (_, Some(0)) => return Err(PatternError::OnlyEmpty),
        _ => {}
    }
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| PatternError::Invalid(e.to_string()))
}

/// The compiled expressions of a tenant.
#[derive(Debug, Clone, Default)]
pub struct PatternIndex {
    set: Option<RegexSet>,
    rules: Vec<(RuleId, Regex)>,
}

impl PatternIndex {
    /// Builds the index from compiled expressions.
    pub fn new(rules: Vec<(RuleId, Regex)>) -> Result<Self, PatternError> {
        if rules.is_empty() {
            return Ok(Self::default());
        }
        let set = RegexSetBuilder::new(rules.iter().map(|(_, r)| r.as_str()))
            .size_limit(SIZE_LIMIT * rules.len().max(1))
            .dfa_size_limit(DFA_SIZE_LIMIT * 4)
            .build()
            .map_err(|e| PatternError::Invalid(e.to_string()))?;
        Ok(Self {
            set: Some(set),
            rules,
        })
    }

    /// Number of expressions.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no expressions.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Calls `found(rule, span)` for every non-empty match in `text`.
    pub fn scan(&self, text: &str, found: &mut impl FnMut(RuleId, Span)) {
        let Some(set) = &self.set else { return };
        if !set.is_match(text) {
            return;
        }
        for index in set.matches(text).iter() {
            let (rule, regex) = &self.rules[index];
            for hit in regex.find_iter(text).filter(|m| !m.is_empty()) {
                found(
                    *rule,
                    Span {
                        start: hit.start(),
                        end: hit.end(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_work() {
        assert!(matches!(
            compile("(unclosed"),
            Err(PatternError::Invalid(_))
        ));
        assert_eq!(compile("[^\\s\\S]").err(), Some(PatternError::NeverMatches));
        assert_eq!(compile("^$").err(), Some(PatternError::OnlyEmpty));
        assert!(matches!(
            compile("a{10000}{10000}"),
            Err(PatternError::Invalid(_))
        ));
        assert!(compile("(?i)wire\\s+transfer").is_ok());
    }

    #[test]
    fn reports_only_matching_rules_with_spans() {
        let index = PatternIndex::new(vec![
            (3, compile("\\bA[0-9]{3}\\b").expect("ok")),
            (4, compile("zzz").expect("ok")),
        ])
        .expect("index");
        let mut found = Vec::new();
        index.scan("codes A123 and A456", &mut |rule, span| {
            found.push((rule, span))
        });
        assert_eq!(
            found,
            vec![
                (3, Span { start: 6, end: 10 }),
                (3, Span { start: 15, end: 19 })
            ]
        );
    }
}
