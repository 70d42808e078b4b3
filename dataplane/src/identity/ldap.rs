//! Handles looked up in the tenant's LDAP directory (`spec.identity.ldap`): the person is the
//! entry's person attribute (default `mail`), the groups its group attribute (default
//! `memberOf`; a DN such as `cn=traders,ou=groups,...` counts as its first value, `traders`).
//!
//! Invariants: the handle is escaped into the filter, so no handle can change the search; a
//! lookup never takes longer than [`LOOKUP_TIMEOUT`]; answers, including "nobody", are cached
//! for the TTL and the cache never holds more than [`MAX_CACHED`] handles; when the directory
//! cannot be reached, the handle is unresolved (messages still flow, policy sees the handle
//! alone) and the directory is not asked again for that handle for [`RETRY_AFTER`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imgate_crds::policy::Protocol;
use imgate_crds::tenant::LdapDirectory;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use super::Identity;

/// Longest a lookup may take, connection included.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Most handles cached.
pub const MAX_CACHED: usize = 100_000;
/// How long a handle is left unresolved after the directory failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What can go wrong with the directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The configuration cannot be used.
    #[error("identity.ldap: {0}")]
    Config(String),
    /// The directory did not answer, or refused.
    #[error("LDAP directory {url}: {reason}")]
    Directory {
        /// The directory.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Credentials for a simple bind.
#[derive(Clone)]
pub struct Bind {
    /// The DN to bind as.
    pub dn: String,
    /// Its password.
    pub password: String,
}

/// A tenant's LDAP directory, with a cache.
pub struct LdapSource {
    url: String,
    base_dn: String,
    bind: Option<Bind>,
    handle_attributes: BTreeMap<String, String>,
    person_attribute: String,
    group_attribute: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<Identity>)>>,
}

impl LdapSource {
    /// The directory a Tenant describes; `bind` comes from its `bindSecretRef`.
    pub fn new(spec: &LdapDirectory, bind: Option<Bind>) -> Result<Self, IdentityError> {
        let ttl = match &spec.cache_ttl {
            Some(text) => imgate_crds::units::parse_duration(text)
                .map_err(|e| IdentityError::Config(format!("cacheTTL {text:?}: {e}")))?,
            None => Duration::from_secs(600),
        };
        if spec.handle_attributes.is_empty() {
            return Err(IdentityError::Config(
                "handleAttributes is empty: name the attribute holding each protocol's handles, e.g. {xmpp: imHandle}".into(),
            ));
        }
        Ok(Self {
            url: spec.url.clone(),
            base_dn: spec.base_dn.clone(),
            bind,
            handle_attributes: spec.handle_attributes.clone(),
            person_attribute: spec
                .person_attribute
                .clone()
                .unwrap_or_else(|| "mail".into()),
            group_attribute: spec
                .group_attribute
                .clone()
                .unwrap_or_else(|| "memberOf".into()),
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Who `handle` of `protocol` is, per the directory; `None` when nobody is, when the
    /// protocol has no handle attribute, or when the directory failed (logged).
    pub async fn lookup(&self, protocol: Protocol, handle: &str) -> Option<Identity> {
        let attribute = self.handle_attributes.get(protocol.as_str())?;
        let key = format!("{}:{}", protocol.as_str(), handle.to_lowercase());
        if let Some((until, cached)) = self.cache().get(&key)
            && *until > Instant::now()
        {
            return cached.clone();
        }
        let (answer, keep) = match tokio::time::timeout(
            LOOKUP_TIMEOUT,
            self.search(attribute, handle),
        )
        .await
        {
            Ok(Ok(answer)) => (answer, self.ttl),
            Ok(Err(error)) => {
                tracing::warn!(%error, handle, "identity lookup failed; the handle stays unresolved");
                (None, RETRY_AFTER.min(self.ttl))
            }
            Err(_) => {
                tracing::warn!(url = %self.url, handle, "identity lookup timed out; the handle stays unresolved");
                (None, RETRY_AFTER.min(self.ttl))
            }
        };
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now() + keep, answer.clone()));
        answer
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Identity>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn search(
        &self,
        attribute: &str,
        handle: &str,
    ) -> Result<Option<Identity>, IdentityError> {
        let fail = |reason: String| IdentityError::Directory {
            url: self.url.clone(),
            reason,
        };
        let settings = LdapConnSettings::new().set_conn_timeout(LOOKUP_TIMEOUT);
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        ldap3::drive!(connection);
        if let Some(bind) = &self.bind {
            ldap.simple_bind(&bind.dn, &bind.password)
                .await
                .and_then(|r| r.success())
                .map_err(|e| fail(format!("bind as {} refused: {e}", bind.dn)))?;
        }
        let filter = format!("({attribute}={})", ldap_escape(handle));
        let (entries, _) = ldap
            .search(
                &self.base_dn,
                Scope::Subtree,
                &filter,
                vec![
                    self.person_attribute.as_str(),
                    self.group_attribute.as_str(),
                ],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| fail(format!("search {filter} under {}: {e}", self.base_dn)))?;
        let _ = ldap.unbind().await;
        let Some(entry) = entries.into_iter().next().map(SearchEntry::construct) else {
            return Ok(None);
        };
        let Some(person) = attribute_values(&entry, &self.person_attribute)
            .first()
            .cloned()
        else {
            return Ok(None);
        };
        let groups = attribute_values(&entry, &self.group_attribute)
            .iter()
            .map(|value| group_name(value))
            .collect();
        Ok(Some(Identity { person, groups }))
    }
}

/// An attribute's values, whatever the case of its name in the answer.
fn attribute_values<'a>(entry: &'a SearchEntry, name: &str) -> &'a [String] {
    entry
        .attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, values)| values.as_slice())
        .unwrap_or_default()
}

/// `traders` for `cn=traders,ou=groups,dc=acme,dc=example`; other values as they are.
fn group_name(value: &str) -> String {
    match value.split_once('=') {
        Some((kind, rest)) if !kind.contains(',') && !kind.trim().is_empty() => {
            rest.split(',').next().unwrap_or(rest).trim().to_owned()
        }
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(
            group_name("cn=traders,ou=groups,dc=acme,dc=example"),
            "traders"
        );
        assert_eq!(group_name("traders"), "traders");
        assert_eq!(
            group_name("CN=Compliance Desk,OU=Groups"),
            "Compliance Desk"
        );
    }

    #[test]
    fn a_directory_without_handle_attributes_is_refused() {
        let spec = LdapDirectory {
            url: "ldap://dir.example".into(),
            base_dn: "dc=example".into(),
            bind_secret_ref: None,
            handle_attributes: BTreeMap::new(),
            person_attribute: None,
            group_attribute: None,
            cache_ttl: None,
        };
        assert!(matches!(
            LdapSource::new(&spec, None),
            Err(IdentityError::Config(_))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_directory_leaves_handles_unresolved_and_is_not_asked_again_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let spec = LdapDirectory {
            url: format!("ldap://127.0.0.1:{port}"),
            base_dn: "dc=example".into(),
            bind_secret_ref: None,
            handle_attributes: BTreeMap::from([("xmpp".into(), "imHandle".into())]),
            person_attribute: None,
            group_attribute: None,
            cache_ttl: Some("10m".into()),
        };
        let source = LdapSource::new(&spec, None).expect("config");
        assert_eq!(
            source.lookup(Protocol::Xmpp, "alice@chat.example").await,
            None
        );
        let cached = source
            .cache()
            .get("xmpp:alice@chat.example")
            .map(|(until, answer)| (*until, answer.clone()))
            .expect("the failure is remembered");
        assert!(cached.0 <= Instant::now() + RETRY_AFTER && cached.1.is_none());
        assert_eq!(
            source.lookup(Protocol::Irc, "alice").await,
            None,
            "no attribute for IRC: not looked up"
        );
        assert!(!source.cache().contains_key("irc:alice"));
    }
}
