//! Durations (`90s`, `15m`, `1h30m`) and byte sizes (`512Ki`, `10Mi`, `1G`) as written in
//! imgate resources. The schema patterns and the parsers below accept exactly the same
//! language, so a value the API server accepted always parses.

use std::time::Duration;

/// Schema pattern for a duration: one or more `<number><unit>` groups, units `ms`, `s`, `m`, `h`, `d`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(ms|s|m|h|d))+$";
/// Schema pattern for a byte size: an integer with an optional SI or binary suffix.
pub const SIZE_PATTERN: &str = r"^[0-9]{1,15}(k|M|G|T|Ki|Mi|Gi|Ti)?$";

/// Why a duration or size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not of the form `90s`, `15m`, `1h30m`.
    #[error("{0:?} is not a duration: write it as 90s, 15m, 1h30m or 7d")]
    Duration(String),
    /// Not of the form `512Ki`, `10Mi`, `1G`.
    #[error(
        "{0:?} is not a size: write it as a byte count with an optional suffix (k, M, G, T, Ki, Mi, Gi, Ti), e.g. 10Mi"
    )]
    Size(String),
    /// Larger than imgate can represent.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a duration such as `90s`, `15m`, `1h30m`, `250ms` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(text.to_owned());
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first() {
                Some(b's') => (1_000, 1),
                Some(b'm') => (60_000, 1),
                Some(b'h') => (3_600_000, 1),
                Some(b'd') => (86_400_000, 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        let part = value
            .checked_mul(unit_ms)
            .ok_or_else(|| UnitError::Overflow(text.to_owned()))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| UnitError::Overflow(text.to_owned()))?;
    }
    Ok(total)
}

/// Parses a byte size such as `512`, `64k`, `10Mi` or `1G` into bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 15 {
        return Err(UnitError::Size(text.to_owned()));
    }
    let value: u64 = text[..digits]
        .parse()
        .map_err(|_| UnitError::Size(text.to_owned()))?;
    let multiplier: u64 = match &text[digits..] {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(UnitError::Size(text.to_owned())),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| UnitError::Overflow(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "s", "10", "1x", "1.5h", "-1s", "1h 30m", "1234567890s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("64k"), Ok(64_000));
        assert_eq!(parse_size("512"), Ok(512));
        for bad in ["", "Mi", "10mb", "1.5Mi", "-3", "10 Mi"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn patterns_agree_with_parsers() {
        let duration = regex::Regex::new(DURATION_PATTERN).expect("pattern compiles");
        let size = regex::Regex::new(SIZE_PATTERN).expect("pattern compiles");
        for text in ["90s", "1h30m", "250ms", "7d", "1x", "", "1.5h", "10"] {
            assert_eq!(
                duration.is_match(text),
                parse_duration(text).is_ok(),
                "{text:?}"
            );
        }
        for text in ["10Mi", "64k", "512", "10mb", "Mi", "1.5Mi"] {
            assert_eq!(size.is_match(text), parse_size(text).is_ok(), "{text:?}");
        }
    }
}
