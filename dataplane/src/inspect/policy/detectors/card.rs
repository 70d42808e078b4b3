//! Payment card numbers: 12 to 19 digits, optionally grouped by single spaces or dashes,
//! with a known issuer prefix and length, and a valid Luhn checksum.

use super::{Span, boundary_after, boundary_before};

/// Most digit groups considered in one run.
const MAX_GROUPS: usize = 32;

/// Calls `found` for every valid card number in `bytes`.
pub(super) fn scan(bytes: &[u8], found: &mut impl FnMut(Span)) {
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    let mut at = 0;
    while at < bytes.len() {
        if !bytes[at].is_ascii_digit() || !boundary_before(bytes, at) {
            at += 1;
            continue;
        }
        let count = digit_groups(bytes, at, &mut groups);
        let run = &groups[..count];
        let run_end = run.last().map_or(at + 1, |g| g.1);
        let digits: usize = run.iter().map(|(start, end)| end - start).sum();
        if digits >= 12 && boundary_after(bytes, run_end) {
            check_run(bytes, run, found);
        }
        at = run_end.max(at + 1);
    }
}

/// Fills `groups` with the digit groups `(start, end)` from `at`, separated by one space or
/// dash; returns how many.
fn digit_groups(bytes: &[u8], mut at: usize, groups: &mut [(usize, usize); MAX_GROUPS]) -> usize {
    let mut count = 0;
    loop {
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        groups[count] = (start, at);
        count += 1;
        let separated = at + 1 < bytes.len()
            && matches!(bytes[at], b' ' | b'-')
            && bytes[at + 1].is_ascii_digit();
        if !separated || count == MAX_GROUPS {
            return count;
        }
        at += 1;
    }
}

/// Tries each run of whole groups holding 12 to 19 digits, longest first from each start,
/// so that a number glued to a preceding reference (`ref 12 4111…`) is still found.
fn check_run(bytes: &[u8], groups: &[(usize, usize)], found: &mut impl FnMut(Span)) {
    let mut first = 0;
    while first < groups.len() {
        let mut digits = [0u8; 19];
        let mut length = 0;
        let mut best = None;
        for (last, &(start, end)) in groups.iter().enumerate().skip(first) {
            if length + (end - start) > 19 {
                break;
            }
            for byte in &bytes[start..end] {
                digits[length] = byte - b'0';
                length += 1;
            }
            if length >= 12 && is_valid_digits(&digits[..length]) {
                best = Some(last);
            }
        }
        match best {
            Some(last) => {
                found(Span {
                    start: groups[first].0,
                    end: groups[last].1,
                });
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// True for a valid card number written as digits with optional spaces or dashes.
pub fn is_valid_card(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    text.bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && is_valid_digits(&digits)
}

fn is_valid_digits(digits: &[u8]) -> bool {
    (12..=19).contains(&digits.len()) && issuer_accepts(digits) && luhn(digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Issuer identification number ranges and the lengths each issuer uses.
fn issuer_accepts(digits: &[u8]) -> bool {
    let prefix = |k: usize| {
        digits[..k]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let n = digits.len();
    let visa = digits[0] == 4 && matches!(n, 13 | 16 | 19);
    let mastercard =
        ((51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4))) && n == 16;
    let amex = matches!(prefix(2), 34 | 37) && n == 15;
    let discover = (prefix(4) == 6011 || (644..=649).contains(&prefix(3)) || prefix(2) == 65)
        && (16..=19).contains(&n);
    let jcb = (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n);
    let diners = ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
        && (14..=19).contains(&n);
    let unionpay = prefix(2) == 62 && (16..=19).contains(&n);
    let maestro = (matches!(
        prefix(4),
        5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763
    ) || (56..=58).contains(&prefix(2)))
        && (12..=19).contains(&n);
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Appends the Luhn check digit to a payload.
    fn with_check_digit(payload: &[u8]) -> Vec<u8> {
        for check in 0..10 {
            let mut digits = payload.to_vec();
            digits.push(check);
            if luhn(&digits) {
                return digits;
            }
        }
        unreachable!("one check digit always satisfies Luhn")
    }

    #[test]
    fn known_test_numbers_validate() {
        for number in [
            "4111111111111111",
            "5500 0000 0000 0004",
            "3400-000000-00009",
            "6011000000000004",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "2223000048400011",
        ] {
            assert!(is_valid_card(number), "{number}");
        }
        for number in [
            "4111111111111112",
            "1234567812345678",
            "41111111111",
            "4111 1111 1111 1111x",
        ] {
            assert!(!is_valid_card(number), "{number}");
        }
    }

    proptest! {
        #[test]
        fn any_visa_with_a_check_digit_is_found(payload in proptest::collection::vec(0u8..10, 14)) {
            let mut digits = vec![4];
            digits.extend(payload);
            let number: String = with_check_digit(&digits).iter().map(|d| char::from(b'0' + d)).collect();
            let text = format!("my card: {number}.");
            let mut spans = Vec::new();
            scan(text.as_bytes(), &mut |s| spans.push(s));
            prop_assert_eq!(spans.len(), 1);
            prop_assert_eq!(&text[spans[0].start..spans[0].end], number.as_str());
        }

        #[test]
        fn changing_one_digit_breaks_the_checksum(payload in proptest::collection::vec(0u8..10, 14), at in 1usize..16, delta in 1u8..10) {
            let mut digits = vec![4];
            digits.extend(payload);
            let mut digits = with_check_digit(&digits);
            digits[at] = (digits[at] + delta) % 10;
            prop_assert!(!luhn(&digits));
        }

        #[test]
        fn scanning_never_panics(text in "[0-9 -]{0,80}") {
            scan(text.as_bytes(), &mut |s| assert!(s.start < s.end && s.end <= text.len()));
        }
    }
}
