//! Problems as the API server words them (`field.ErrorList` in the Kubernetes sources), and
//! the name and label formats its validation shares (`k8s.io/apimachinery/pkg/util/validation`).
//!
//! Invariant: each message starts with the field's path, then the API server's error type.

/// The problems found so far, in the order found.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// The messages.
    pub fn into_messages(self) -> Vec<String> {
        self.0
    }

    /// A field that must be set is not.
    pub fn required(&mut self, path: &str) {
        self.0.push(format!("{path}: Required value"));
    }

    /// A field that must be set is not, saying what it must hold.
    pub fn required_saying(&mut self, path: &str, what: &str) {
        self.0.push(format!("{path}: Required value: {what}"));
    }

    /// A field holds a value the API server refuses, for `why`.
    pub fn invalid(&mut self, path: &str, value: impl std::fmt::Debug, why: &str) {
        self.0
            .push(format!("{path}: Invalid value: {value:?}: {why}"));
    }

    /// A field is set where it may not be, for `why`.
    pub fn forbidden(&mut self, path: &str, why: &str) {
        self.0.push(format!("{path}: Forbidden: {why}"));
    }

    /// A field holds a value outside its enumeration `supported`.
    pub fn unsupported(&mut self, path: &str, value: &str, supported: &[&str]) {
        let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.0.push(format!(
            "{path}: Unsupported value: {value:?}: supported values: {}",
            supported.join(", ")
        ));
    }

    /// A value that must be unique is repeated.
    pub fn duplicate(&mut self, path: &str, value: impl std::fmt::Debug) {
        self.0.push(format!("{path}: Duplicate value: {value:?}"));
    }

    /// A reference names nothing that exists in the object.
    pub fn not_found(&mut self, path: &str, value: &str) {
        self.0.push(format!("{path}: Not found: {value:?}"));
    }

    /// Checks `value` against an enumeration.
    pub fn one_of(&mut self, path: &str, value: &str, supported: &[&str]) {
        if !supported.contains(&value) {
            self.unsupported(path, value, supported);
        }
    }

    /// Checks that `value` is a DNS-1123 label, reporting `path` otherwise.
    pub fn dns_label(&mut self, path: &str, value: &str) {
        if !is_dns_label(value) {
            self.invalid(
                path,
                value,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63)",
            );
        }
    }

    /// Checks that `value` is a DNS-1123 subdomain, reporting `path` otherwise.
    pub fn dns_subdomain(&mut self, path: &str, value: &str) {
        if !is_dns_subdomain(value) {
            self.invalid(
                path,
                value,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253)",
            );
        }
    }

    /// Checks that `value` is an IANA service name (a named port), reporting `path`
    /// otherwise.
    pub fn port_name(&mut self, path: &str, value: &str) {
        if !is_port_name(value) {
            self.invalid(
                path,
                value,
                "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter, and neither start nor end with '-' nor hold '--'",
            );
        }
    }

    /// Checks that `value` is a port number.
    pub fn port_number(&mut self, path: &str, value: i32) {
        if !(1..=65535).contains(&value) {
            self.invalid(path, value, "must be between 1 and 65535, inclusive");
        }
    }

    /// Checks that `key` is a qualified name (a label or annotation key).
    pub fn qualified_name(&mut self, path: &str, key: &str) {
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key),
        };
        if prefix.is_some_and(|p| !is_dns_subdomain(p)) || !is_label_value(name) || name.is_empty()
        {
            self.invalid(
                path,
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63), with an optional DNS subdomain prefix and '/'",
            );
        }
    }

    /// Checks a label's key and value.
    pub fn label(&mut self, path: &str, key: &str, value: &str) {
        self.qualified_name(path, key);
        if !is_label_value(value) {
            self.invalid(
                path,
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)",
            );
        }
    }
}

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns_label(value: &str) -> bool {
    value.len() <= 63 && is_label_part(value)
}

/// One dot-separated part of a DNS-1123 subdomain: a label of any length.
fn is_label_part(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(value: &str) -> bool {
    is_dns_label(value) && value.as_bytes()[0].is_ascii_lowercase()
}

/// A DNS-1123 subdomain: labels joined by `.`, at most 253 characters.
pub fn is_dns_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(is_label_part)
}

/// A label value: empty, or `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most 63.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric())
}

/// An IANA service name, as a named port must be.
pub fn is_port_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 15
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !value.contains("--")
}
