//! Who handles are, for `imgate up`: a Tenant's `spec.identity` (static handles and an LDAP
//! directory) turned into the dataplane's [`Directory`], from a file or as the operator
//! delivers it.
//!
//! Invariants: a directory is built whole or not at all, so a bad `spec.identity` never
//! replaces a good one in part; an LDAP directory with a bind Secret gets its bind from the
//! environment, and without it the whole `spec.identity` is refused with what to set.

use std::path::Path;

use anyhow::Context;
use imgate_crds::tenant::{IdentitySpec, LdapDirectory};
use imgate_dataplane::identity::Directory;
use imgate_dataplane::identity::ldap::{Bind, LdapSource};

/// Reads a Tenant's `spec.identity` from `path`.
pub fn read(path: &Path) -> anyhow::Result<IdentitySpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the identity file {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// A Tenant's `spec.identity` in `yaml`, which came from `origin`.
pub fn parse(yaml: &str, origin: &str) -> anyhow::Result<IdentitySpec> {
    serde_saphyr::from_str(yaml).with_context(|| {
        format!("{origin} is not a Tenant's spec.identity (static handles and an ldap directory)")
    })
}

/// The directory `identity` describes; an empty one without it.
pub fn directory(identity: Option<&IdentitySpec>) -> anyhow::Result<Directory> {
    let Some(identity) = identity else {
        return Ok(Directory::default());
    };
    let mut directory = Directory::from_static(&identity.static_entries);
    if let Some(ldap) = &identity.ldap {
        directory = directory.with_ldap(LdapSource::new(ldap, ldap_bind(ldap)?)?);
    }
    Ok(directory)
}

/// What `identity` holds, for the log: "2 static handles and an LDAP directory".
pub fn describe(identity: Option<&IdentitySpec>) -> String {
    let Some(identity) = identity else {
        return "none".to_owned();
    };
    let handles = match identity.static_entries.len() {
        1 => "1 static handle".to_owned(),
        count => format!("{count} static handles"),
    };
    match identity.ldap {
        Some(_) => format!("{handles} and an LDAP directory"),
        None => handles,
    }
}

/// The LDAP bind for `imgate up`: the Tenant's `bindSecretRef` names a Kubernetes Secret,
/// which a local run reads from `IMGATE_LDAP_BIND_DN` and `IMGATE_LDAP_PASSWORD` instead.
fn ldap_bind(ldap: &LdapDirectory) -> anyhow::Result<Option<Bind>> {
    if ldap.bind_secret_ref.is_none() {
        return Ok(None);
    }
    match (
        std::env::var("IMGATE_LDAP_BIND_DN"),
        std::env::var("IMGATE_LDAP_PASSWORD"),
    ) {
        (Ok(dn), Ok(password)) => Ok(Some(Bind { dn, password })),
        _ => anyhow::bail!(
            "the Tenant's identity.ldap has a bindSecretRef: set IMGATE_LDAP_BIND_DN and IMGATE_LDAP_PASSWORD to the Secret's bindDN and password"
        ),
    }
}
