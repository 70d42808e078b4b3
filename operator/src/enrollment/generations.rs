//! The record of each connector's newest tunnel certificate
//! ([`imgate_dataplane::tunnel::generations`]), shared by all of a tenant's dataplanes in the
//! Secret [`GENERATIONS_SECRET`](crate::names::GENERATIONS_SECRET) of its namespace: the
//! operator makes it once, empty; a dataplane that signs a certificate replaces the record
//! there before it answers the connector, and every dataplane follows it.
//!
//! Invariants: only the Secret named is read or written (the dataplanes' RBAC is limited to
//! its name); a replacement is an update carrying the `resourceVersion` the record was read
//! at, so a renewal another dataplane recorded meanwhile is never overwritten (the update is
//! refused with `409 Conflict` and the dataplane reads again); the record is under
//! [`RECORD_KEY`], and the Secret's other fields (labels, owner, annotations) are kept; a broken
//! watch is retried with backoff and never ends the follow.

use futures::StreamExt;
use imgate_dataplane::tunnel::generations::{Generations, Pending, SharedRecord};
use imgate_dataplane::tunnel::tokens::TokenError;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// The Secret key holding the record (JSON).
pub const RECORD_KEY: &str = "generations.json";

/// The generations Secret of the dataplane's namespace, as a [`SharedRecord`].
#[derive(Clone)]
pub struct SecretGenerations {
    secrets: Api<Secret>,
    name: String,
}

fn store(error: kube::Error) -> TokenError {
    TokenError::Store(error.to_string())
}

/// The record in `secret`, if it holds one.
fn record_of(secret: &Secret) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(RECORD_KEY))
        .map(|bytes| bytes.0.clone())
}

impl SecretGenerations {
    /// Secret `name` in the namespace `client` defaults to (the pod's own).
    pub fn new(client: Client, name: &str) -> Self {
        Self {
            secrets: Api::default_namespaced(client),
            name: name.to_owned(),
        }
    }

    async fn read(&self) -> Result<Secret, TokenError> {
        self.secrets
            .get_opt(&self.name)
            .await
            .map_err(store)?
            .ok_or_else(|| {
                TokenError::Store(format!(
                    "Secret {} is missing; the operator makes it with the tenant's other objects",
                    self.name
                ))
            })
    }

    async fn replace_at(&self, bytes: Vec<u8>, version: &str) -> Result<bool, TokenError> {
        let mut secret = self.read().await?;
        if secret.resource_version().as_deref() != Some(version) {
            return Ok(false);
        }
        secret
            .data
            .get_or_insert_default()
            .insert(RECORD_KEY.into(), ByteString(bytes));
        match self
            .secrets
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(error) => Err(store(error)),
        }
    }

    /// Hands every version of the record to `generations`, for as long as it runs.
    pub async fn follow(self, generations: &Generations) {
        let name = &self.name;
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut changes = std::pin::pin!(
            watcher(self.secrets.clone(), config)
                .default_backoff()
                .applied_objects()
        );
        while let Some(change) = changes.next().await {
            match change {
                Ok(secret) => {
                    if let Err(error) = generations.deliver(record_of(&secret).as_deref()) {
                        tracing::error!(target: "imgate::tunnel", "connector certificates from Secret {name} refused, the last good record stays: {error}");
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "imgate::tunnel", "watching Secret {name}: {error}; trying again");
                }
            }
        }
    }
}

impl SharedRecord for SecretGenerations {
    fn load(&self) -> Pending<'_, (Option<Vec<u8>>, String)> {
        Box::pin(async move {
            let secret = self.read().await?;
            Ok((
                record_of(&secret),
                secret.resource_version().unwrap_or_default(),
            ))
        })
    }

    fn replace<'a>(&'a self, bytes: Vec<u8>, version: &'a str) -> Pending<'a, bool> {
        Box::pin(self.replace_at(bytes, version))
    }

    fn describe(&self) -> String {
        format!("Secret {}", self.name)
    }
}
