//! A dataplane following its tenant's policy ConfigMap through the API server, so that a
//! change reaches it moments after the operator writes it, instead of when the kubelet next
//! refreshes the mounted copy (a minute or more): the policy set, who handles are
//! (`identity.yaml`) and the revoked connectors.
//!
//! Invariants: only the ConfigMap named is read (by a field selector, which the dataplanes'
//! RBAC, limited to that name, requires); each part is handed on once, when it differs from
//! the last one handed on, and all three with the first delivery (the re-lists after a broken
//! watch repeat what was seen); a ConfigMap without a policy set is skipped whole; a broken
//! watch is retried with backoff and never ends the follow.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::desired::POLICY_REVISION;
use crate::policy::{IDENTITY_FILE, POLICY_FILE, REVOKED_FILE};

/// What a dataplane does with each part of its policy ConfigMap when it changes.
pub trait Follower {
    /// The policy set (`policy.yaml`) of `revision`.
    fn policy(&mut self, revision: &str, yaml: &str);
    /// The tenant's `spec.identity` as YAML, or `None` when it has none.
    fn identity(&mut self, yaml: Option<&str>);
    /// The revoked connectors, by id.
    fn revoked(&mut self, ids: &BTreeSet<String>);
}

/// One delivery of the ConfigMap.
struct Delivered {
    policy: String,
    identity: Option<String>,
    revoked: BTreeSet<String>,
}

impl Delivered {
    fn of(map: &ConfigMap) -> Option<Self> {
        let data = map.data.as_ref()?;
        let revoked = data.get(REVOKED_FILE).map_or_else(BTreeSet::new, |lines| {
            lines
                .lines()
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        });
        Some(Self {
            policy: data.get(POLICY_FILE)?.clone(),
            identity: data.get(IDENTITY_FILE).cloned(),
            revoked,
        })
    }
}

/// Hands each changed part of ConfigMap `name` of `configmaps` to `follower`, for as long
/// as it runs.
pub async fn follow(configmaps: Api<ConfigMap>, name: &str, follower: &mut impl Follower) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = std::pin::pin!(
        watcher(configmaps, config)
            .default_backoff()
            .applied_objects()
    );
    let mut last: Option<Delivered> = None;
    while let Some(change) = changes.next().await {
        let map = match change {
            Ok(map) => map,
            Err(error) => {
                tracing::warn!(target: "imgate::session", "watching ConfigMap {name}: {error}; trying again");
                continue;
            }
        };
        let Some(delivered) = Delivered::of(&map) else {
            tracing::warn!(target: "imgate::session", "ConfigMap {name} holds no {POLICY_FILE}; the policy in force stays");
            continue;
        };
        if last.as_ref().is_none_or(|l| l.policy != delivered.policy) {
            let revision = map
                .annotations()
                .get(POLICY_REVISION)
                .map_or("unknown", String::as_str);
            follower.policy(revision, &delivered.policy);
        }
        if last
            .as_ref()
            .is_none_or(|l| l.identity != delivered.identity)
        {
            follower.identity(delivered.identity.as_deref());
        }
        if last.as_ref().is_none_or(|l| l.revoked != delivered.revoked) {
            follower.revoked(&delivered.revoked);
        }
        last = Some(delivered);
    }
}

#[cfg(test)]
mod tests;
