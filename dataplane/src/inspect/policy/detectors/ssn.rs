//! US social security numbers written `AAA-GG-SSSS` or `AAA GG SSSS` (one separator used
//! throughout), excluding numbers the SSA never issues: area 000, 666 or 900–999, group 00,
//! serial 0000, and numbers made public in advertising.

use super::{Span, boundary_after, boundary_before};

/// Numbers that are well known and void (Woolworth's wallet card, an advertised example).
const VOID: [&str; 3] = ["078051120", "219099999", "123456789"];

/// Calls `found` for every valid SSN in `bytes`.
pub(super) fn scan(bytes: &[u8], found: &mut impl FnMut(Span)) {
    if bytes.len() < 11 {
        return;
    }
    for start in 0..=bytes.len() - 11 {
        if !bytes[start].is_ascii_digit() {
            continue;
        }
        let candidate = &bytes[start..start + 11];
        if boundary_before(bytes, start)
            && boundary_after(bytes, start + 11)
            && is_valid_ssn_bytes(candidate)
        {
            found(Span {
                start,
                end: start + 11,
            });
        }
    }
}

/// True for a valid, formatted SSN such as `536-22-1234`.
pub fn is_valid_ssn(text: &str) -> bool {
    text.len() == 11 && is_valid_ssn_bytes(text.as_bytes())
}

fn is_valid_ssn_bytes(b: &[u8]) -> bool {
    let separator = b[3];
    if !matches!(separator, b'-' | b' ') || b[6] != separator {
        return false;
    }
    let mut digits = [0u8; 9];
    for (slot, byte) in digits
        .iter_mut()
        .zip(b[0..3].iter().chain(&b[4..6]).chain(&b[7..11]))
    {
        if !byte.is_ascii_digit() {
            return false;
        }
        *slot = *byte;
    }
    let number = |range: std::ops::Range<usize>| {
        digits[range]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    let void = VOID.iter().any(|v| v.as_bytes() == digits);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !void
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn found(text: &str) -> usize {
        let mut count = 0;
        scan(text.as_bytes(), &mut |_| count += 1);
        count
    }

    proptest! {
        #[test]
        fn issued_ranges_are_found(area in 1u32..900, group in 1u32..100, serial in 1u32..10000, dash in any::<bool>()) {
            prop_assume!(area != 666);
            let separator = if dash { '-' } else { ' ' };
            let ssn = format!("{area:03}{separator}{group:02}{separator}{serial:04}");
            let void = VOID.contains(&ssn.replace(separator, "").as_str());
            prop_assert_eq!(is_valid_ssn(&ssn), !void);
            prop_assert_eq!(found(&format!("ssn: {ssn}.")), usize::from(!void));
        }

        #[test]
        fn never_issued_ranges_are_not(area in prop_oneof![Just(0u32), Just(666u32), 900u32..1000], group in 0u32..100, serial in 0u32..10000) {
            let never = [format!("{area:03}-{group:02}-{serial:04}"), format!("123-00-{serial:04}"), format!("123-{group:02}-0000")];
            for ssn in never {
                prop_assert!(!is_valid_ssn(&ssn), "{} should be invalid", ssn);
            }
        }
    }
}
