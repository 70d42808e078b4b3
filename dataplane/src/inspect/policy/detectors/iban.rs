//! IBANs: a registered country code, the country's length, and the ISO 7064 mod-97
//! checksum. Written compact or in groups of four separated by single spaces, in either case.

use super::{Span, boundary_after, boundary_before};

/// IBAN length by country (SWIFT IBAN registry).
const LENGTHS: [(&[u8; 2], usize); 84] = [
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
];

/// Countries registered after the table above was drawn up that share its rules.
const MORE_LENGTHS: [(&[u8; 2], usize); 5] = [
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

fn expected_length(country: [u8; 2]) -> Option<usize> {
    LENGTHS
        .iter()
        .chain(MORE_LENGTHS.iter())
        .find(|(code, _)| **code == country)
        .map(|(_, length)| *length)
}

/// Calls `found` for every valid IBAN in `bytes`.
pub(super) fn scan(bytes: &[u8], found: &mut impl FnMut(Span)) {
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let starts = boundary_before(bytes, at)
            && bytes[at].is_ascii_alphabetic()
            && bytes[at + 1].is_ascii_alphabetic()
            && bytes[at + 2].is_ascii_digit()
            && bytes[at + 3].is_ascii_digit();
        if starts && let Some(end) = candidate_end(bytes, at) {
            found(Span { start: at, end });
            at = end;
        } else {
            at += 1;
        }
    }
}

/// The end of a valid IBAN starting at `start`, if there is one.
fn candidate_end(bytes: &[u8], start: usize) -> Option<usize> {
    let country = [
        bytes[start].to_ascii_uppercase(),
        bytes[start + 1].to_ascii_uppercase(),
    ];
    let length = expected_length(country)?;
    let mut compact = Vec::with_capacity(length);
    let mut at = start;
    while compact.len() < length && at < bytes.len() {
        let byte = bytes[at];
        if byte.is_ascii_alphanumeric() {
            compact.push(byte.to_ascii_uppercase());
        } else if byte == b' '
            && compact.len() % 4 == 0
            && at + 1 < bytes.len()
            && bytes[at + 1].is_ascii_alphanumeric()
        {
            // A single space between groups of four.
        } else {
            return None;
        }
        at += 1;
    }
    (compact.len() == length && boundary_after(bytes, at) && mod97(&compact) == 1).then_some(at)
}

/// True for a valid IBAN, compact or grouped in fours.
pub fn is_valid_iban(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 4 && candidate_end(bytes, 0) == Some(bytes.len())
}

/// ISO 7064 MOD 97-10 over the rearranged IBAN (country and check digits moved to the end,
/// letters as 10–35).
fn mod97(compact: &[u8]) -> u32 {
    compact[4..]
        .iter()
        .chain(&compact[..4])
        .fold(0u32, |acc, &byte| {
            if byte.is_ascii_digit() {
                (acc * 10 + u32::from(byte - b'0')) % 97
            } else {
                (acc * 100 + u32::from(byte - b'A') + 10) % 97
            }
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn generated_ibans_validate_and_any_single_digit_change_is_caught(
            bban in "[0-9]{18}", at in 2usize..22, delta in 1u8..10, grouped in any::<bool>(),
        ) {
            let remainder = mod97(format!("DE00{bban}").as_bytes());
            let iban = format!("DE{:02}{bban}", 98 - remainder);
            prop_assert!(is_valid_iban(&iban), "{}", iban);
            let text = if grouped {
                iban.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect::<Vec<_>>().join(" ")
            } else {
                iban.clone()
            };
            let mut spans = Vec::new();
            scan(format!("pay {text} now").as_bytes(), &mut |s| spans.push(s));
            prop_assert_eq!(spans.len(), 1);
            let mut bytes = iban.into_bytes();
            bytes[at] = b'0' + (bytes[at] - b'0' + delta) % 10;
            prop_assert!(!is_valid_iban(std::str::from_utf8(&bytes).unwrap_or_default()));
        }
    }

    #[test]
    fn registry_examples_validate() {
        for iban in [
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "NO9386011117947",
            "CH9300762011623852957",
            "LC55HEMM000100010012001200023015",
            "BE68 5390 0754 7034",
            "ES91 2100 0418 4502 0005 1332",
        ] {
            assert!(is_valid_iban(iban), "{iban}");
        }
        for iban in [
            "GB82WEST12345698765431",
            "GB82WEST1234569876543",
            "XX82WEST12345698765432",
            "GB82 WEST12 345698765432",
        ] {
            assert!(!is_valid_iban(iban), "{iban}");
        }
    }
}
