//! The text people see: what a message displays once formatting codes are taken out, which
//! every content, URL and detector rule matches against, so that formatting cannot hide a
//! word from them.
//!
//! Removed: C0 control characters other than tab, line feed and carriage return (IRC's bold
//! `\x02`, colour `\x03`, hex colour `\x04`, monospace `\x11`, reset `\x0f`, reverse `\x16`,
//! italic `\x1d`, strikethrough `\x1e`, underline `\x1f`; XML forbids them, so no XMPP body
//! carries one) and DEL; in IRC, a colour code's arguments too (`\x03` with up to two digits,
//! optionally a comma and up to two more; `\x04` with up to six hex digits, likewise), which
//! clients display as colour, not text; and invisible Unicode format characters (zero-width
//! spaces and joiners, word joiners, bidirectional controls, soft hyphens, the byte order
//! mark, variation selectors).
//!
//! Invariants: every byte of the visible text maps back to the byte of the original it was
//! copied from, whole characters at a time, so a span in the visible text maps to a span of
//! the original on character boundaries, which is where redactions apply; text with nothing
//! to remove is used as it is, with no copy.

use super::verdict::Span;

/// A message's visible text, and the map back to the original. Reused between messages.
#[derive(Debug, Default, Clone)]
pub struct Visible {
    text: String,
    /// For each byte of `text`, the offset of the original byte it was copied from.
    origin: Vec<u32>,
    /// Nothing was removed: the original is the visible text.
    identity: bool,
}

/// Whether `c` is an invisible format character that clients display as nothing.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether `c` is a control character clients do not display.
fn control(c: char) -> bool {
    (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{7F}'
}

/// How many bytes at the start of `bytes` satisfy `wanted`, at most `most`.
fn run(bytes: &[u8], most: usize, wanted: impl Fn(u8) -> bool) -> usize {
    bytes.iter().take(most).take_while(|b| wanted(**b)).count()
}

/// The length of an IRC colour code's arguments at the start of `rest`: for `\x03`, one or
/// two digits, optionally a comma and one or two more; for `\x04`, exactly six hex digits,
/// optionally a comma and six more (fewer are not a colour, and clients show them as text).
fn colour_arguments(rest: &[u8], hex: bool) -> usize {
    let colour = |bytes: &[u8]| {
        if hex {
            let n = run(bytes, 6, |b| b.is_ascii_hexdigit());
            if n == 6 { n } else { 0 }
        } else {
            run(bytes, 2, |b| b.is_ascii_digit())
        }
    };
    let first = colour(rest);
    if first == 0 {
        return 0;
    }
    let after = &rest[first..];
    match after.first() {
        Some(b',') => match colour(&after[1..]) {
            0 => first,
            second => first + 1 + second,
        },
        _ => first,
    }
}

impl Visible {
    /// Takes `input` as a message of IRC (`irc`) or of another protocol.
    pub fn render(&mut self, input: &str, irc: bool) {
        self.text.clear();
        self.origin.clear();
        self.identity = !input.chars().any(|c| control(c) || invisible(c));
        if self.identity {
            return;
        }
        let bytes = input.as_bytes();
        let mut chars = input.char_indices();
        while let Some((at, c)) = chars.next() {
            let skip = match c {
                '\u{03}' if irc => colour_arguments(&bytes[at + 1..], false),
                '\u{04}' if irc => colour_arguments(&bytes[at + 1..], true),
                c if control(c) || invisible(c) => 0,
                c => {
                    self.text.push(c);
                    let at = u32::try_from(at).unwrap_or(u32::MAX);
                    self.origin.extend((0..c.len_utf8() as u32).map(|i| at + i));
                    continue;
                }
            };
            // The arguments are ASCII: skipping their characters skips their bytes.
            for _ in 0..skip {
                chars.next();
            }
        }
    }

    /// The visible text of `input`, the message last rendered.
    pub fn as_str<'a>(&'a self, input: &'a str) -> &'a str {
        if self.identity { input } else { &self.text }
    }

    /// The span of the original that visible bytes `span` came from; `span` must lie on
    /// character boundaries of the visible text, within it.
    pub fn original_span(&self, span: Span) -> Span {
        if self.identity || span.start >= span.end {
            return span;
        }
        let start = self.origin[span.start] as usize;
        let end = self.origin[span.end - 1] as usize + 1;
        Span { start, end }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn visible(input: &str, irc: bool) -> String {
        let mut v = Visible::default();
        v.render(input, irc);
        v.as_str(input).to_owned()
    }

    #[test]
    fn irc_formatting_is_taken_out_and_spans_map_back() {
        let cases = [
            ("project \x02falcon\x02", "project falcon"),
            ("pro\x1dje\x1fct \x16fal\x11con\x0f", "project falcon"),
            ("\x0304project\x03 \x0304,12fal\x03con", "project falcon"),
            ("\x034,5project", "project"),
            ("\x03,5project", ",5project"),
            (
                "\x04FF0000project\x04 \x04ff0000,00ff00falcon",
                "project falcon",
            ),
            ("4111\x02 1111\x1e 1111 1111", "4111 1111 1111 1111"),
            ("line\ttab\r\nnext", "line\ttab\r\nnext"),
        ];
        for (input, expected) in cases {
            assert_eq!(visible(input, true), expected, "{input:?}");
        }
        // A hex colour is six digits: fewer are text.
        assert_eq!(visible("\x044111 1111", true), "4111 1111");
        // Elsewhere a control character is removed, and digits after it are text.
        assert_eq!(visible("\x0304project", false), "04project");
        assert_eq!(
            visible("4111\u{200B}1111\u{FEFF}1111\u{2060}1111", false),
            "4111111111111111"
        );

        let input = "say \x02fal\x02con now";
        let mut v = Visible::default();
        v.render(input, true);
        let start = v.as_str(input).find("falcon").expect("found");
        let span = v.original_span(Span {
            start,
            end: start + 6,
        });
        assert_eq!(&input[span.start..span.end], "fal\x02con");
    }

    proptest! {
        #[test]
        fn spans_of_the_visible_text_map_to_char_boundaries(
            input in "[\\x00-\\x1f\\x7fa-z0-9,#\u{200B}\u{00E9}\u{1F600} ]{0,48}",
            irc in any::<bool>(),
        ) {
            let mut v = Visible::default();
            v.render(&input, irc);
            let text = v.as_str(&input).to_owned();
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            for (i, &start) in boundaries.iter().enumerate() {
                for &end in &boundaries[i + 1..] {
                    let span = v.original_span(Span { start, end });
                    prop_assert!(input.is_char_boundary(span.start) && input.is_char_boundary(span.end));
                    prop_assert!(span.start < span.end && span.end <= input.len());
                }
            }
        }
    }
}
