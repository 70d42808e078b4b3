//! Text normalisation for keyword matching, so that evasions do not slip through.
//!
//! Each character of the input is folded on its own, in this order:
//! 1. compatibility decomposition (NFKD): full-width `ｆａｌｃｏｎ`, ligatures, circled and
//!    mathematical letters become their plain forms;
//! 2. combining marks are dropped (`fálcon` → `falcon`);
//! 3. lower-casing;
//! 4. a non-ASCII character whose Unicode confusable prototype (UTS #39) is ASCII becomes that
//!    prototype (Cyrillic `а` → `a`, Greek `ο` → `o`), which defeats mixed-script spoofing;
//!    default-ignorable characters (zero-width spaces and joiners, soft hyphens, bidi
//!    controls, variation selectors) are dropped;
//! 5. every run of white space becomes one space.
//!
//! ASCII letters and digits are only lower-cased: folding ASCII look-alikes (`rn` → `m`,
//! `0` → `o`) would make ordinary words match.
//!
//! Invariants: the same function normalises keywords at compile time and messages at run
//! time; every byte of the normalised text maps back to the original character it came from,
//! so a match in normalised text always yields a span on UTF-8 character boundaries of the
//! original.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};
use unicode_security::skeleton;

use super::verdict::Span;

/// A normalised text with the map back to the original. Reused between messages to avoid
/// allocation.
#[derive(Debug, Default, Clone)]
pub struct Normalized {
    text: String,
    starts: Vec<u32>,
    ends: Vec<u32>,
    last_was_space: bool,
    /// The text is ASCII with single spaces only, so normalised offsets equal original ones
    /// and the offset maps are left empty.
    identity: bool,
}

impl Normalized {
    /// Normalises `input`, replacing what this buffer held.
    pub fn normalize(&mut self, input: &str) {
        self.text.clear();
        self.starts.clear();
        self.ends.clear();
        self.last_was_space = false;
        self.identity = is_plain_ascii(input.as_bytes());
        if self.identity {
            self.text.push_str(input);
            self.text.make_ascii_lowercase();
            return;
        }
        for (offset, c) in input.char_indices() {
            let start = offset as u32;
            let end = (offset + c.len_utf8()) as u32;
            if c.is_ascii() {
                self.push(c.to_ascii_lowercase(), start, end);
            } else {
                fold(c, &mut |folded| self.push(folded, start, end));
            }
        }
    }

    fn push(&mut self, c: char, start: u32, end: u32) {
        let c = if c.is_whitespace() {
            if self.last_was_space {
                // Extend the previous space over this character too.
                if let Some(last) = self.ends.last_mut() {
                    *last = end;
                }
                return;
            }
            ' '
        } else {
            c
        };
        self.last_was_space = c == ' ';
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.starts.push(start);
            self.ends.push(end);
        }
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The span of the original text that normalised bytes `start..end` came from.
    /// `start < end <= self.as_str().len()` must hold.
    pub fn original_span(&self, start: usize, end: usize) -> Span {
        if self.identity {
            return Span { start, end };
        }
        Span {
            start: self.starts[start] as usize,
            end: self.ends[end - 1] as usize,
        }
    }
}

/// True for ASCII text whose only white space is single spaces: normalising it is
/// lower-casing alone.
fn is_plain_ascii(bytes: &[u8]) -> bool {
    let mut previous_space = false;
    for &byte in bytes {
        let space = byte == b' ';
        if !byte.is_ascii()
            || (byte.is_ascii_whitespace() && !space)
            || byte == 0x0b
            || (space && previous_space)
        {
            return false;
        }
        previous_space = space;
    }
    true
}

/// Normalises a whole string (for keywords at compile time).
pub fn normalize(input: &str) -> String {
    let mut normalized = Normalized::default();
    normalized.normalize(input);
    normalized.text.trim().to_owned()
}

fn fold(c: char, emit: &mut impl FnMut(char)) {
    decompose_compatible(c, |d| {
        if is_combining_mark(d) {
            return;
        }
        for lower in d.to_lowercase() {
            if lower.is_ascii() {
                emit(lower);
                continue;
            }
            let mut buffer = [0u8; 4];
            let single = lower.encode_utf8(&mut buffer);
            let mut prototype = skeleton(single).peekable();
            if prototype.peek().is_none() {
                // Default-ignorable: zero-width characters, bidi controls, soft hyphen.
                continue;
            }
            if skeleton(single).all(|p| p.is_ascii()) {
                for p in prototype {
                    emit(p.to_ascii_lowercase());
                }
            } else {
                emit(lower);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn folds_evasions_to_plain_ascii() {
        let cases = [
            ("Project FALCON", "project falcon"),
            ("ｐｒｏｊｅｃｔ　ｆａｌｃｏｎ", "project falcon"),
            ("pro\u{200B}ject fal\u{200D}con", "project falcon"),
            ("proj\u{00AD}ect fal\u{FEFF}con", "project falcon"),
            ("prоjеct fаlcоn", "project falcon"),
            ("project \t\n falcon", "project falcon"),
            ("prôject fálcon", "project falcon"),
            ("ᴾʳᵒʲᵉᶜᵗ", "project"),
            ("𝐟𝐚𝐥𝐜𝐨𝐧", "falcon"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input), expected, "{input:?}");
        }
    }

    #[test]
    fn leaves_other_scripts_readable() {
        assert_eq!(normalize("Привет мир"), normalize("привет мир"));
        assert_eq!(normalize("日本語"), "日本語");
    }

    #[test]
    fn maps_spans_back_to_original_characters() {
        let input = "say ｆａｌｃｏｎ now";
        let mut n = Normalized::default();
        n.normalize(input);
        let start = n.as_str().find("falcon").expect("found");
        let span = n.original_span(start, start + 6);
        assert_eq!(&input[span.start..span.end], "ｆａｌｃｏｎ");
    }

    proptest! {
        #[test]
        fn spans_always_land_on_char_boundaries(input in "\\PC{0,64}") {
            let mut n = Normalized::default();
            n.normalize(&input);
            let text = n.as_str().to_owned();
            for (start, _) in text.char_indices() {
                for end in (start + 1..=text.len()).filter(|e| text.is_char_boundary(*e)) {
                    let span = n.original_span(start, end);
                    prop_assert!(span.start < span.end && span.end <= input.len());
                    prop_assert!(input.is_char_boundary(span.start) && input.is_char_boundary(span.end));
                }
            }
        }

        #[test]
        fn normalising_is_idempotent(input in "\\PC{0,64}") {
            let once = normalize(&input);
            prop_assert_eq!(normalize(&once), once.clone());
        }
    }
}
