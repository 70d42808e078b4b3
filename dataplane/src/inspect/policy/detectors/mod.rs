//! Built-in detectors: scanners that find sensitive data and validate what they find, so
//! that a random 16-digit number is not reported as a card.
//!
//! Invariants: detectors read the original text (no normalisation: these formats are ASCII),
//! never allocate when the text has nothing that could start a finding, and report byte
//! spans on character boundaries (every span starts and ends at an ASCII byte).

mod card;
mod iban;
mod secrets;
mod ssn;

use imgate_crds::policy::Detector;

use super::verdict::Span;

pub use card::is_valid_card;
pub use iban::is_valid_iban;
pub use ssn::is_valid_ssn;

/// One finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Which detector found it.
    pub detector: Detector,
    /// Where.
    pub span: Span,
}

/// The detectors a compiled policy uses.
#[derive(Debug, Clone)]
pub struct Detectors {
    enabled: [bool; Detector::ALL.len()],
    secrets: Option<secrets::SecretScanner>,
}

impl Detectors {
    /// Prepares the given detectors.
    pub fn new(enabled: impl IntoIterator<Item = Detector>) -> Self {
        let mut flags = [false; Detector::ALL.len()];
        for detector in enabled {
            flags[index(detector)] = true;
        }
        let wanted: Vec<Detector> = Detector::ALL
            .into_iter()
            .filter(|d| flags[index(*d)])
            .collect();
        let secrets = secrets::SecretScanner::new(&wanted);
        Self {
            enabled: flags,
            secrets,
        }
    }

    /// True when no detector is enabled.
    pub fn is_empty(&self) -> bool {
        !self.enabled.iter().any(|e| *e)
    }

    fn on(&self, detector: Detector) -> bool {
        self.enabled[index(detector)]
    }

    /// Appends every finding in `text` to `out`.
    pub fn scan(&self, text: &str, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        if bytes.iter().any(u8::is_ascii_digit) {
            if self.on(Detector::CreditCard) {
                card::scan(bytes, &mut |span| {
                    out.push(Finding {
                        detector: Detector::CreditCard,
                        span,
                    })
                });
            }
            if self.on(Detector::UsSsn) {
                ssn::scan(bytes, &mut |span| {
                    out.push(Finding {
                        detector: Detector::UsSsn,
                        span,
                    })
                });
            }
            if self.on(Detector::Iban) {
                iban::scan(bytes, &mut |span| {
                    out.push(Finding {
                        detector: Detector::Iban,
                        span,
                    })
                });
            }
        }
        if let Some(secrets) = &self.secrets {
            secrets.scan(bytes, &mut |detector, span| {
                out.push(Finding { detector, span })
            });
        }
    }
}

fn index(detector: Detector) -> usize {
    Detector::ALL
        .iter()
        .position(|d| *d == detector)
        .unwrap_or_default()
}

/// True for bytes that continue a word or number: a finding must not be glued to one.
fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// True when `bytes[at]` is a word boundary on the left.
fn boundary_before(bytes: &[u8], at: usize) -> bool {
    at == 0 || !is_word_byte(bytes[at - 1])
}

/// True when `bytes[at]` is a word boundary on the right.
fn boundary_after(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || !is_word_byte(bytes[at])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(detector: Detector, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        Detectors::new([detector]).scan(text, &mut out);
        out.iter()
            .map(|f| text[f.span.start..f.span.end].to_owned())
            .collect()
    }

    #[test]
    fn cards_are_found_and_validated() {
        assert_eq!(
            found(Detector::CreditCard, "card 4111 1111 1111 1111 exp 12/29"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            found(Detector::CreditCard, "amex 3782-822463-10005."),
            ["3782-822463-10005"]
        );
        assert_eq!(
            found(Detector::CreditCard, "mc:5555555555554444"),
            ["5555555555554444"]
        );
        assert_eq!(
            found(Detector::CreditCard, "ref 12 4012888888881881"),
            ["4012888888881881"]
        );
        assert!(
            found(Detector::CreditCard, "card 4111 1111 1111 1112").is_empty(),
            "Luhn fails"
        );
        assert!(
            found(Detector::CreditCard, "order 1234567812345670").is_empty(),
            "no issuer 1"
        );
        assert!(
            found(Detector::CreditCard, "id 41111111111111111111").is_empty(),
            "too long"
        );
        assert!(
            found(Detector::CreditCard, "x4111111111111111").is_empty(),
            "glued to a word"
        );
    }

    #[test]
    fn ssns_are_found_and_validated() {
        assert_eq!(
            found(Detector::UsSsn, "ssn 536-22-1234 ok"),
            ["536-22-1234"]
        );
        assert_eq!(found(Detector::UsSsn, "ssn 536 22 1234"), ["536 22 1234"]);
        for invalid in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "536-00-1234",
            "536-22-0000",
            "078-05-1120",
            "536-22 1234",
            "1536-22-1234",
        ] {
            assert!(found(Detector::UsSsn, invalid).is_empty(), "{invalid}");
        }
    }

    #[test]
    fn ibans_are_found_and_validated() {
        assert_eq!(
            found(Detector::Iban, "pay GB82 WEST 1234 5698 7654 32 today"),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            found(Detector::Iban, "DE89370400440532013000"),
            ["DE89370400440532013000"]
        );
        assert_eq!(
            found(Detector::Iban, "iban: fr1420041010050500013m02606"),
            ["fr1420041010050500013m02606"]
        );
        assert!(
            found(Detector::Iban, "GB82 WEST 1234 5698 7654 33").is_empty(),
            "checksum"
        );
        assert!(
            found(Detector::Iban, "DE8937040044053201300").is_empty(),
            "length"
        );
        assert!(
            found(Detector::Iban, "ZZ89370400440532013000").is_empty(),
            "country"
        );
    }

    #[test]
    fn secrets_are_found_and_validated() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4UbaDzY5Vo1ZqhS8z+vQ0XrP2\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            found(Detector::PrivateKey, &format!("here {key} ok")),
            [key]
        );
        assert!(
            found(
                Detector::PrivateKey,
                "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
            )
            .is_empty()
        );
        assert!(
            found(
                Detector::PrivateKey,
                "-----BEGIN PRIVATE KEY----- (paste here)"
            )
            .is_empty(),
            "no body"
        );
        assert_eq!(
            found(Detector::AwsAccessKey, "key=AKIAIOSFODNN7EXAMPLE;"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(
            found(Detector::AwsAccessKey, "AKIAIOSFODNN7EXAMPLE1").is_empty(),
            "too long"
        );
        assert!(
            found(Detector::AwsAccessKey, "AKIAIOSFODNN0EXAMPLE").is_empty(),
            "not base32"
        );
        assert_eq!(
            found(
                Detector::GoogleApiKey,
                "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
            ),
            ["AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"]
        );
        assert_eq!(
            found(
                Detector::GithubToken,
                "token ghp_16C7e42F292c6912E7710c838347Ae178B4a now"
            ),
            ["ghp_16C7e42F292c6912E7710c838347Ae178B4a"]
        );
        assert!(found(Detector::GithubToken, "ghp_short").is_empty());
        let slack = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
        assert_eq!(
            found(Detector::SlackToken, &format!("use {slack}")),
            [slack]
        );
        assert!(found(Detector::SlackToken, "xoxb-not-a-token").is_empty());
    }

    #[test]
    fn disabled_detectors_find_nothing() {
        let mut out = Vec::new();
        Detectors::new([Detector::Iban]).scan("4111 1111 1111 1111", &mut out);
        assert!(out.is_empty());
    }
}
