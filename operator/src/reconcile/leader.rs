//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! Invariants: a replica takes the Lease only when it is absent, already its own, or not
//! renewed for its whole duration; every write carries the `resourceVersion` it was read at
//! (or is a create), so of two replicas racing for it one gets `409 Conflict` and stays a
//! follower; a leader that cannot renew within the duration stops leading (the process exits
//! and restarts as a follower) before another replica may take over.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use super::Metrics;

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease was not renewed within its duration.
    #[error("lost the leader lease {0}: not renewed within its duration; restarting as a follower")]
    Lost(String),
}

/// One replica's claim on a Lease.
pub struct LeaseLock {
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

impl LeaseLock {
    /// Replica `identity`'s claim on Lease `namespace/name`, held for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Takes or renews the Lease at `now`: whether this replica leads.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let stamp = Some(MicroTime(now));
        let existing = self.leases.get_opt(&self.name).await?;
        let absent = existing.is_none();
        let (metadata, spec) = match existing {
            None => (
                ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                None,
            ),
            Some(lease) => (lease.metadata, lease.spec),
        };
        let held = spec.clone().unwrap_or_default();
        let mine = held.holder_identity.as_deref() == Some(self.identity.as_str());
        let lapsed = match (&held.holder_identity, &held.renew_time) {
            (Some(holder), Some(renewed)) if !holder.is_empty() => {
                let lasts = i64::from(held.lease_duration_seconds.unwrap_or(0));
                renewed.0.as_second().saturating_add(lasts) < now.as_second()
            }
            _ => true,
        };
        if !mine && !lapsed {
            return Ok(false);
        }
        let lease = Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds(self.duration)),
                acquire_time: if mine {
                    held.acquire_time
                } else {
                    stamp.clone()
                },
                renew_time: stamp,
                lease_transitions: Some(
                    held.lease_transitions.unwrap_or(0) + i32::from(!mine && spec.is_some()),
                ),
                ..LeaseSpec::default()
            }),
        };
        let written = if absent {
            self.leases.create(&PostParams::default(), &lease).await
        } else {
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

/// Waits until `lock` leads, then runs `work` while renewing the Lease every third of its
/// duration; returns when `work` ends, or with an error when the Lease was taken or could not
/// be renewed for two thirds of its duration (before any other replica may take it).
pub async fn lead<F: Future<Output = ()>>(
    lock: &LeaseLock,
    metrics: &Metrics,
    work: F,
) -> Result<(), LeaderError> {
    let retry = lock.duration / 3;
    loop {
        match lock.try_acquire(Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => tracing::debug!(lease = %lock.name, "another replica leads"),
            Err(error) => {
                tracing::warn!(lease = %lock.name, %error, "cannot read the leader lease")
            }
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(lease = %lock.name, identity = %lock.identity, "leading");
    metrics.set_leader(true);
    let mut renewed = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(retry);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => {
                metrics.set_leader(false);
                return Ok(());
            }
            _ = ticks.tick() => {
                match lock.try_acquire(Timestamp::now()).await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => {
                        metrics.set_leader(false);
                        return Err(LeaderError::Lost(lock.name.clone()));
                    }
                    Err(error) => tracing::warn!(lease = %lock.name, %error, "cannot renew the leader lease"),
                }
                if renewed.elapsed() >= lock.duration - retry {
                    metrics.set_leader(false);
                    return Err(LeaderError::Lost(lock.name.clone()));
                }
            }
        }
    }
}
