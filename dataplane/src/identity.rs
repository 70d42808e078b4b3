//! Identity resolution: who a protocol handle (`surferdood124@chat.example`, an IRC nick at a
//! server) really is, and their directory groups, so that policy subjects and the archive name
//! people rather than handles. Today from the Tenant's static map; a directory (LDAP) source
//! plugs in behind the same lookup.
//!
//! Invariants: lookups ignore case; a handle without an entry resolves to nobody (policy then
//! sees the handle alone), never to a guess.

use std::collections::HashMap;

use imgate_crds::tenant::StaticIdentity;

/// A resolved person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The person (usually an e-mail address).
    pub person: String,
    /// Their groups.
    pub groups: Vec<String>,
}

/// Handle → person.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: HashMap<String, Identity>,
}

impl Directory {
    /// A directory from a Tenant's `spec.identity.static` entries.
    pub fn from_static(entries: &[StaticIdentity]) -> Self {
        let entries = entries
            .iter()
            .map(|e| {
                (
                    e.handle.to_lowercase(),
                    Identity {
                        person: e.person.clone(),
                        groups: e.groups.clone(),
                    },
                )
            })
            .collect();
        Self { entries }
    }

    /// Who `handle` is, if known.
    pub fn resolve(&self, handle: &str) -> Option<&Identity> {
        self.entries.get(&handle.to_lowercase())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_case_insensitively_and_only_known_handles() {
        let directory = Directory::from_static(&[StaticIdentity {
            handle: "SurferDood124@chat.example".into(),
            person: "jane.doe@acme.example".into(),
            groups: vec!["traders".into()],
        }]);
        let jane = directory
            .resolve("surferdood124@CHAT.example")
            .expect("known");
        assert_eq!(
            (jane.person.as_str(), jane.groups.as_slice()),
            ("jane.doe@acme.example", &["traders".to_owned()][..])
        );
        assert!(directory.resolve("someone@chat.example").is_none());
    }
}
