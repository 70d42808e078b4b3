//! Identity resolution: who a protocol handle (`surferdood124@chat.example`, an IRC nick at a
//! server) really is, and their directory groups, so that policy subjects and the archive name
//! people rather than handles: from the Tenant's static map first, then from its LDAP
//! directory ([`ldap`]).
//!
//! Invariants: lookups ignore case; a static entry wins over the directory; a handle without
//! an entry resolves to nobody (policy then sees the handle alone), never to a guess.

pub mod ldap;

use std::collections::HashMap;

use imgate_crds::policy::Protocol;
use imgate_crds::tenant::StaticIdentity;

/// A resolved person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The person (usually an e-mail address).
    pub person: String,
    /// Their groups.
    pub groups: Vec<String>,
}

/// Where an identity came from, as archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Tenant's static map.
    Static,
    /// The Tenant's LDAP directory.
    Ldap,
}

impl Source {
    /// The name in archive records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Ldap => "ldap",
        }
    }
}

/// Handle → person.
#[derive(Default)]
pub struct Directory {
    entries: HashMap<String, Identity>,
    ldap: Option<ldap::LdapSource>,
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
        Self {
            entries,
            ldap: None,
        }
    }

    /// Adds an LDAP directory, asked for handles the static map does not know.
    pub fn with_ldap(mut self, source: ldap::LdapSource) -> Self {
        self.ldap = Some(source);
        self
    }

    /// Who `handle` is, if known, and where that came from. The directory is asked only for
    /// a `protocol`'s handles; other names (a proxy user, a client address) are looked up in
    /// the static map alone.
    pub async fn resolve(
        &self,
        protocol: Option<Protocol>,
        handle: &str,
    ) -> Option<(Identity, Source)> {
        if let Some(identity) = self.entries.get(&handle.to_lowercase()) {
            return Some((identity.clone(), Source::Static));
        }
        // Boxed: a directory lookup is a large future, and every session's relay would
        // otherwise carry its size while idle.
        let identity = Box::pin(self.ldap.as_ref()?.lookup(protocol?, handle)).await?;
        Some((identity, Source::Ldap))
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

    #[tokio::test]
    async fn resolves_case_insensitively_and_only_known_handles() {
        let directory = Directory::from_static(&[StaticIdentity {
            handle: "SurferDood124@chat.example".into(),
            person: "jane.doe@acme.example".into(),
            groups: vec!["traders".into()],
        }]);
        let (jane, source) = directory
            .resolve(Some(Protocol::Xmpp), "surferdood124@CHAT.example")
            .await
            .expect("known");
        assert_eq!(
            (jane.person.as_str(), jane.groups.as_slice(), source),
            (
                "jane.doe@acme.example",
                &["traders".to_owned()][..],
                Source::Static
            )
        );
        assert!(
            directory
                .resolve(Some(Protocol::Xmpp), "someone@chat.example")
                .await
                .is_none()
        );
    }
}
