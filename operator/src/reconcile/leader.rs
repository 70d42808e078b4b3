//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! Invariants: a replica takes the Lease only when it is absent, already its own, or not
//! renewed for its whole duration; every write carries the `resourceVersion` it was read at
//! (or is a create), so of two replicas racing for it one gets `409 Conflict` and stays a
//! follower; a leader whose last successful renewal began two thirds of the duration ago
//! stops its work (even while a renewal hangs), a third of the duration before another
//! replica may take over (replicas' clocks are assumed to agree within seconds, as NTP keeps
//! them: a follower judges a lapse by the Lease's renewal time), and waits to lead again in the same process (an API server outage
//! restarts nothing); a leader that shuts down releases the Lease once its work has wound
//! down, so another replica takes over at once.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use futures::channel::oneshot;
use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use super::Metrics;

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

    /// Gives the Lease up, if this replica holds it: no holder, renewed now for one second, so
    /// that any replica may take it at once. Written on condition, like every write; a
    /// failure is logged only (the Lease then lapses after its duration).
    pub async fn release(&self) {
        let released = async {
            let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        let released: Result<bool, kube::Error> = released.await;
        match released {
            Ok(true) => tracing::info!(lease = %self.name, "released the leader lease"),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lease = %self.name, %error, "could not release the leader lease; it lapses after its duration")
            }
        }
    }
}

/// How long the work of a leader that is shutting down may take to wind down before it is
/// stopped and the Lease released (within the operator pod's 30 s grace period).
pub const WIND_DOWN: Duration = Duration::from_secs(20);

/// A future that completes when the work of a leadership term is to wind down gracefully:
/// the replica is shutting down, or the term's leader went away.
pub type Stop = futures::future::Map<oneshot::Receiver<()>, fn(Result<(), oneshot::Canceled>)>;

/// How a leadership term ended.
enum Term {
    /// The work ended by itself, or the replica is shutting down: it leads no more.
    Done,
    /// The Lease was taken, or could not be renewed in time: the work was stopped at once,
    /// and the replica waits to lead again.
    Lost,
}

/// Runs `work` whenever `lock` leads, until `shutdown` completes; returns then (or when the
/// work ends by itself), having released the Lease if it held it.
///
/// While it leads, the Lease is renewed every third of its duration. A renewal refused
/// (another replica took the Lease) or missing for two thirds of the duration (an API server
/// outage) ends the term before any other replica may take over: the work is dropped at once,
/// mid-request if need be, and the replica waits to lead again in the same process, so an
/// outage of the control plane restarts no replica. On `shutdown`, the work is told to stop
/// (its [`Stop`] completes) and given time to finish what it is doing, while the Lease is
/// still renewed; then the Lease is released, so another replica takes over at once rather
/// than after the Lease's duration.
pub async fn run<W, F>(
    lock: &LeaseLock,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
    mut work: W,
) where
    W: FnMut(Stop) -> F,
    F: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let acquired = tokio::select! {
            () = &mut shutdown => {
                // A take-over in flight may have succeeded: give it back.
                lock.release().await;
                return;
            }
            acquired = acquire(lock) => acquired,
        };
        tracing::info!(lease = %lock.name, identity = %lock.identity, "leading");
        metrics.set_leader(true);
        let (stop, stopped) = oneshot::channel();
        let stopped: Stop = stopped.map(|_| ());
        let term = lead(lock, acquired, work(stopped), stop, shutdown.as_mut()).await;
        metrics.set_leader(false);
        match term {
            Term::Done => {
                lock.release().await;
                return;
            }
            Term::Lost => tracing::warn!(
                lease = %lock.name,
                "lost the leader lease (not renewed within two thirds of its duration): reconciling stopped; waiting to lead again"
            ),
        }
    }
}

/// Waits until `lock` leads, trying every third of its duration; when the attempt that took
/// the Lease began (the Lease's renewal time is no earlier).
async fn acquire(lock: &LeaseLock) -> Instant {
    loop {
        let attempt = Instant::now();
        match lock.try_acquire(Timestamp::now()).await {
            Ok(true) => return attempt,
            Ok(false) => tracing::debug!(lease = %lock.name, "another replica leads"),
            Err(error) => {
                tracing::warn!(lease = %lock.name, %error, "cannot read the leader lease")
            }
        }
        tokio::time::sleep(lock.duration / 3).await;
    }
}

/// Runs one leadership term of `work`, from the Lease `acquired` then, renewing it, until the
/// work ends or the Lease is lost; on `shutdown`, sends `stop` and renews on while the work
/// winds down, for at most [`WIND_DOWN`].
///
/// The Lease counts as held until two thirds of its duration after the start of the last
/// renewal that succeeded (a renewal's time is stamped after it starts): then the work is
/// dropped, even while a renewal hangs, a third of the duration before another replica
/// may take the Lease.
async fn lead(
    lock: &LeaseLock,
    acquired: Instant,
    work: impl Future<Output = ()>,
    stop: oneshot::Sender<()>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Term {
    let retry = lock.duration / 3;
    let hold = lock.duration - retry;
    let mut renewed = acquired;
    let mut ticks = tokio::time::interval_at(acquired + retry, retry);
    let mut work = std::pin::pin!(work);
    let mut stop = Some(stop);
    let mut wind_down: Option<Instant> = None;
    // A replica shutting down leads no more, whatever becomes of its Lease.
    let ended = |stop: &Option<oneshot::Sender<()>>| {
        if stop.is_some() {
            Term::Lost
        } else {
            Term::Done
        }
    };
    loop {
        let far = Instant::now() + lock.duration;
        tokio::select! {
            () = &mut work => return Term::Done,
            () = shutdown.as_mut(), if stop.is_some() => {
                tracing::info!(lease = %lock.name, "shutting down: letting reconciles in flight finish");
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                wind_down = Some(Instant::now() + WIND_DOWN);
            }
            () = tokio::time::sleep_until(wind_down.unwrap_or(far)), if wind_down.is_some() => {
                tracing::warn!(lease = %lock.name, "reconciles still running {WIND_DOWN:?} after the shutdown signal: stopped");
                return Term::Done;
            }
            () = tokio::time::sleep_until(renewed + hold) => return ended(&stop),
            _ = ticks.tick() => {
                let attempt = Instant::now();
                match tokio::time::timeout_at(renewed + hold, lock.try_acquire(Timestamp::now())).await {
                    Ok(Ok(true)) => renewed = attempt,
                    Ok(Ok(false)) => return ended(&stop),
                    Ok(Err(error)) => tracing::warn!(lease = %lock.name, %error, "cannot renew the leader lease"),
                    Err(_) => tracing::warn!(lease = %lock.name, "renewing the leader lease takes too long"),
                }
            }
        }
    }
}
