//! A dataplane following its tenant's policy ConfigMap through the API server, so that a
//! policy change reaches new messages moments after the operator writes it, instead of when
//! the kubelet next refreshes the mounted copy (a minute or more).
//!
//! Invariants: only the ConfigMap named is read (by a field selector, which the dataplanes'
//! RBAC, limited to that name, requires); a policy set is handed on once, when its text
//! differs from the last one handed on (the initial list, and the re-lists after a broken
//! watch, repeat what was seen); a broken watch is retried with backoff and never ends the
//! follow.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::desired::POLICY_REVISION;
use crate::policy::POLICY_FILE;

/// Hands each new policy set in ConfigMap `name` of `configmaps` to `take`, with its revision,
/// for as long as it runs.
pub async fn follow(configmaps: Api<ConfigMap>, name: &str, mut take: impl FnMut(&str, &str)) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = std::pin::pin!(
        watcher(configmaps, config)
            .default_backoff()
            .applied_objects()
    );
    let mut last: Option<String> = None;
    while let Some(change) = changes.next().await {
        let map = match change {
            Ok(map) => map,
            Err(error) => {
                tracing::warn!(target: "imgate::session", "watching ConfigMap {name}: {error}; trying again");
                continue;
            }
        };
        let Some(yaml) = map.data.as_ref().and_then(|data| data.get(POLICY_FILE)) else {
            tracing::warn!(target: "imgate::session", "ConfigMap {name} holds no {POLICY_FILE}; the policy in force stays");
            continue;
        };
        if last.as_ref() == Some(yaml) {
            continue;
        }
        let revision = map
            .annotations()
            .get(POLICY_REVISION)
            .map_or("unknown", String::as_str);
        take(revision, yaml);
        last = Some(yaml.clone());
    }
}

#[cfg(test)]
mod tests;
