//! Runs the alerts: a reader that follows the archive log into the [`Outbox`], and one sender
//! per receiver that delivers what the outbox says it has not been sent.
//!
//! Invariants:
//! - the log lets go of records ([`ArchiveLog::hold_after`]) only once a snapshot of the
//!   outbox covering them is durable ([`persist`](super::persist)), so a crash or kill reads
//!   again at most what the last snapshot had not taken, and reading again makes the same
//!   alerts: none is lost; while records come in, a snapshot is taken at most every
//!   [`SNAPSHOT_EVERY`], and once they stop;
//! - a receiver's notices are marked sent and journalled right after it acknowledged them, so
//!   after a restart a notice is sent again only if imgate stopped between the receiver's
//!   answer and that write;
//! - a receiver that fails is retried with a doubling wait, up to `retry_max`; once it has
//!   failed for `down_after` a `system` record `alert-receiver-down` is archived, and
//!   `alert-receiver-recovered` when it takes deliveries again, even after a restart (the
//!   outbox keeps who is down); other receivers are not held up by it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::config::Settings;
use super::deliver::{Delivery, DeliveryError};
use super::metrics::AlertMetrics;
use super::outbox::{Notice, Outbox, Status, Wants};
use super::persist::{KeepError, Keeper};
use crate::archive::fs::StdFs;
use crate::archive::record::{Body, Record};
use crate::archive::tail::{LogTail, TailError};
use crate::archive::{ArchiveError, ArchiveLog, Draft};

/// Notices a receiver may refuse for good in a row before it is taken to be failing.
const MOST_REFUSED: usize = 3;

/// How the runner retries and reports.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The first wait after a failed delivery; it doubles after each failure.
    pub retry_first: Duration,
    /// The longest wait between tries.
    pub retry_max: Duration,
    /// How long a receiver fails before that is archived as `alert-receiver-down`.
    pub down_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            down_after: Duration::from_secs(300),
        }
    }
}

/// How one receiver is doing, for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverHealth {
    /// Since when deliveries have failed, while they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    /// The latest failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// It has failed for `down_after` (and is archived as down): what status reports count
    /// as failing, so that one failed try does not flip the Tenant's condition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

/// Every receiver's health, by name.
pub type Health = Arc<Mutex<BTreeMap<String, ReceiverHealth>>>;

struct Inner {
    settings: Settings,
    tenant: String,
    writer: String,
    log: ArchiveLog,
    metrics: AlertMetrics,
    timing: Timing,
    outbox: tokio::sync::Mutex<Outbox>,
    keeper: Arc<Mutex<Keeper>>,
    /// Woken when the outbox has something new.
    changed: Notify,
    health: Health,
}

/// The longest the outbox goes between snapshots while it reads records: what the log
/// holds beyond the last snapshot, and a restart reads again.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// The alerts of one dataplane.
pub struct Alerting {
    inner: Arc<Inner>,
}

impl Alerting {
    /// Opens the outbox in `dir` (starting at the log's end when there is none), reads the
    /// log again from its last snapshot, applies the deliveries recorded since, and holds the
    /// log's records from there on. Call before the shipper starts, so that no record the
    /// outbox has not read is released.
    pub fn open(
        settings: Settings,
        (tenant, writer): (&str, &str),
        dir: &Path,
        log: ArchiveLog,
        metrics: AlertMetrics,
        timing: Timing,
    ) -> Result<Self, KeepError> {
        let (mut keeper, loaded) = Keeper::open(dir)?;
        let mut outbox = loaded
            .snapshot
            .unwrap_or_else(|| Outbox::starting_after(log.durable_seq()));
        let mut tail = LogTail::new(StdFs, log.dir(), outbox.cursor + 1);
        let keep_text = settings.receivers.iter().any(|r| r.include_text);
        let through = log.durable_seq();
        let mut not_read = None;
        loop {
            let mut hits = Vec::new();
            let result = tail.read(through, &mut |seq, payload| {
                if let Some(record) = hit(payload) {
                    hits.push((seq, record));
                }
            });
            for (seq, record) in &hits {
                outbox.read(*seq, record, settings.window, keep_text);
            }
            match result {
                Ok(_) => break,
                Err(TailError::Missing { wanted, first }) => {
                    not_read = Some((wanted, first));
                    tail.skip_to(first);
                }
                Err(TailError::Archive(error)) => {
                    tracing::error!(%error, "alerts cannot read the archive log; they go on from where it can be read");
                    break;
                }
            }
        }
        outbox.cursor = outbox.cursor.max(tail.next_seq().saturating_sub(1));
        for sent in loaded.sent {
            outbox.mark_one(&sent.receiver, &sent.id, sent.status, sent.at);
        }
        keeper.snapshot(&outbox)?;
        log.hold_after(outbox.cursor);
        let mut health: BTreeMap<String, ReceiverHealth> = settings
            .receivers
            .iter()
            .map(|r| {
                let state = match outbox.down.get(&r.name) {
                    Some(since) => ReceiverHealth {
                        failing_since: Some(*since),
                        error: Some("down when the dataplane last ran".into()),
                        down: true,
                    },
                    None => ReceiverHealth::default(),
                };
                (r.name.clone(), state)
            })
            .collect();
        for (name, why) in &settings.broken {
            health.insert(
                name.clone(),
                ReceiverHealth {
                    failing_since: Some(Utc::now()),
                    error: Some(why.clone()),
                    down: true,
                },
            );
            metrics.set_up(name, false);
        }
        for receiver in &settings.receivers {
            metrics.set_up(&receiver.name, !outbox.down.contains_key(&receiver.name));
        }
        let inner = Arc::new(Inner {
            settings,
            tenant: tenant.to_owned(),
            writer: writer.to_owned(),
            log,
            metrics,
            timing,
            outbox: tokio::sync::Mutex::new(outbox),
            keeper: Arc::new(Mutex::new(keeper)),
            changed: Notify::new(),
            health: Arc::new(Mutex::new(health)),
        });
        if let Some((wanted, first)) = not_read {
            not_read_record(&inner, wanted, first);
        }
        for (name, why) in &inner.settings.broken {
            mark(
                &inner,
                "alert-receiver-down",
                format!(
                    "receiver {name} cannot run: {why}; alerts raised until the dataplane starts with it are not sent to it"
                ),
            );
        }
        Ok(Self { inner })
    }

    /// How many receivers alerts go to.
    pub fn receivers(&self) -> usize {
        self.inner.settings.receivers.len()
    }

    /// Every receiver's health.
    pub fn health(&self) -> Health {
        self.inner.health.clone()
    }

    /// Runs until `stop` turns true: reads the log and delivers.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for receiver in &self.inner.settings.receivers {
            let delivery = Delivery::new(receiver.clone(), &self.inner.tenant);
            tasks.push(tokio::spawn(send_loop(
                self.inner.clone(),
                delivery,
                stop.clone(),
            )));
        }
        read_loop(self.inner.clone(), stop).await;
        for task in tasks {
            let _ = task.await;
        }
        let mut outbox = self.inner.outbox.lock().await;
        snapshot(&self.inner, &mut outbox).await;
    }
}

fn wants(inner: &Inner) -> Vec<Wants> {
    inner
        .settings
        .receivers
        .iter()
        .map(|r| Wants {
            name: r.name.clone(),
            min_severity: r.min_severity,
            include_text: r.include_text,
        })
        .collect()
}

/// Retires what is done, takes a snapshot of `outbox` (written on a blocking thread; the
/// caller holds the outbox's lock, so snapshots and journal entries happen in order) and lets
/// the log go of what it covers; whether it was taken.
async fn snapshot(inner: &Inner, outbox: &mut Outbox) -> bool {
    let (receivers, now) = (wants(inner), Utc::now());
    let json = off_runtime(|| outbox.to_json_retired(&receivers, now));
    let keeper = inner.keeper.clone();
    let taken = tokio::task::spawn_blocking(move || {
        keeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot_json(&json)
    })
    .await;
    match taken {
        Ok(Ok(())) => {
            outbox.retire(&receivers, now);
            inner.log.hold_after(outbox.cursor);
            true
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "the alert outbox could not be saved; the log keeps the records since its last snapshot");
            false
        }
        Err(error) => {
            tracing::error!(%error, "the alert outbox could not be saved");
            false
        }
    }
}

/// Runs `work` (serializing a large outbox) without holding up the tasks of the runtime's
/// thread, where the runtime can hand them to another.
fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Records in the journal that `receiver` took `notices` now.
async fn journal(inner: &Inner, receiver: &str, notices: &[Notice]) {
    let keeper = inner.keeper.clone();
    let (receiver, notices) = (receiver.to_owned(), notices.to_vec());
    let written = tokio::task::spawn_blocking(move || {
        keeper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&receiver, &notices, Utc::now())
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "a delivery could not be recorded; its notices are sent again after a restart")
        }
        Err(error) => tracing::error!(%error, "a delivery could not be recorded"),
    }
}

fn not_read_record(inner: &Inner, wanted: u64, first: u64) {
    tracing::error!(
        wanted,
        first,
        "records left the log before alerts were read from them"
    );
    mark(
        inner,
        "alerts-not-read",
        format!(
            "records {wanted} to {} of writer {} were shipped and left the local log before alerts were made from them; search the archive for their rule matches",
            first.saturating_sub(1),
            inner.writer
        ),
    );
}

/// Follows the log into the outbox until `stop`, taking a snapshot at most every
/// [`SNAPSHOT_EVERY`] while it reads, and once it has read what was there.
async fn read_loop(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let keep_text = inner.settings.receivers.iter().any(|r| r.include_text);
    let window = inner.settings.window;
    let mut cursor = inner.outbox.lock().await.cursor;
    let mut tail = Some(LogTail::new(StdFs, inner.log.dir(), cursor + 1));
    let mut last_snapshot = tokio::time::Instant::now();
    let mut unsaved = false;
    loop {
        let durable = tokio::select! {
            durable = inner.log.durable_after(cursor) => Some(durable),
            _ = tokio::time::sleep_until(last_snapshot + SNAPSHOT_EVERY), if unsaved => None,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let Some(durable) = durable else {
            let mut outbox = inner.outbox.lock().await;
            unsaved = !snapshot(&inner, &mut outbox).await;
            last_snapshot = tokio::time::Instant::now();
            continue;
        };
        let Some(mut reader) = tail.take() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut hits: Vec<(u64, Record)> = Vec::new();
            let result = reader.read(durable, &mut |seq, payload| {
                if let Some(record) = hit(payload) {
                    hits.push((seq, record));
                }
            });
            (reader, hits, result)
        })
        .await;
        let Ok((mut reader, hits, result)) = read else {
            tracing::error!("the alert reader stopped");
            return;
        };
        let mut outbox = inner.outbox.lock().await;
        for (seq, record) in &hits {
            outbox.read(*seq, record, window, keep_text);
            if let Body::Message { verdict, .. } | Body::FileOffer { verdict, .. } = &record.body {
                for rule in &verdict.rules {
                    inner.metrics.hit(rule);
                }
            }
        }
        let mut retry = false;
        match result {
            Ok(_) => {}
            Err(TailError::Missing { wanted, first }) => {
                not_read_record(&inner, wanted, first);
                reader.skip_to(first);
            }
            Err(TailError::Archive(error)) => {
                tracing::error!(%error, "alerts cannot read the archive log; trying again");
                retry = true;
            }
        }
        outbox.cursor = outbox.cursor.max(reader.next_seq().saturating_sub(1));
        cursor = outbox.cursor;
        unsaved = true;
        if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            unsaved = !snapshot(&inner, &mut outbox).await;
            last_snapshot = tokio::time::Instant::now();
        }
        drop(outbox);
        tail = Some(reader);
        inner.changed.notify_waiters();
        if retry {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// The record in `payload` when it matched a rule.
fn hit(payload: &[u8]) -> Option<Record> {
    const RULES: &[u8] = br#""rules":["#;
    if !payload.windows(RULES.len()).any(|w| w == RULES) {
        return None;
    }
    let record: Record = serde_json::from_slice(payload).ok()?;
    matches!(record.body, Body::Message { .. } | Body::FileOffer { .. }).then_some(record)
}

/// Appends a `system` record.
fn mark(inner: &Inner, event: &str, detail: String) {
    let body = Body::System {
        event: event.into(),
        detail,
    };
    let draft = Draft::new(&inner.tenant, &inner.writer, "alerts", &body);
    if let Err(error) = inner.log.append_draft(&draft) {
        report_unrecorded(&error, event);
    }
}

fn report_unrecorded(error: &ArchiveError, event: &str) {
    tracing::error!(%error, event, "cannot record this in the archive log");
}

/// Delivers to one receiver until `stop`. A delivery under way when `stop` comes is let
/// finish (it is bounded by its timeout) and recorded, so a rollout sends nothing twice.
async fn send_loop(inner: Arc<Inner>, delivery: Delivery, stop: watch::Receiver<bool>) {
    let name = delivery.receiver().name.clone();
    let me = wants(&inner)
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| unreachable!("the delivery's receiver is configured"));
    let mut wait = inner.timing.retry_first;
    // After a batch was refused for good, this many notices go one at a time, to find the
    // ones refused.
    let mut one_at_a_time = 0usize;
    // Notices refused for good in a row: past a few, the receiver, not the notices, is
    // wrong, and it is treated as failing instead of giving them up.
    let mut refused_in_row = 0usize;
    loop {
        if *stop.borrow() {
            return;
        }
        let changed = inner.changed.notified();
        let now = Utc::now();
        let batch = if one_at_a_time > 0 {
            1
        } else {
            delivery.batch()
        };
        let (notices, next_due) = {
            let outbox = inner.outbox.lock().await;
            inner.metrics.set_backlog(&name, outbox.backlog(&me, now));
            (outbox.pending(&me, now, batch), outbox.next_due(&me, now))
        };
        let mut stopped = stop.clone();
        if notices.is_empty() {
            let until_due = next_due
                .and_then(|at| (at - now).to_std().ok())
                .map_or(Duration::from_secs(3600), |d| d + Duration::from_millis(10));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(until_due) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            continue;
        }
        match delivery.send(&notices).await {
            Ok(()) => {
                wait = inner.timing.retry_first;
                one_at_a_time = one_at_a_time.saturating_sub(1);
                refused_in_row = 0;
                delivered(&inner, &name, &notices).await;
            }
            Err(error)
                if error.is_permanent() && notices.len() == 1 && refused_in_row < MOST_REFUSED =>
            {
                one_at_a_time = one_at_a_time.saturating_sub(1);
                refused_in_row += 1;
                // Refused for good: kept in the archive, never sent here; the rest go on.
                inner.metrics.failed(&name, error.reason());
                tracing::error!(receiver = %name, alert = %notices[0].alert.id, %error, "the receiver refused an alert for good");
                mark(
                    &inner,
                    "alert-rejected",
                    format!(
                        "receiver {name} refused alert {} ({}) for good: {error}; it is not sent there again",
                        notices[0].alert.id,
                        notices[0].status.as_str()
                    ),
                );
                // Neither it nor its resolution is sent there again.
                let mut given_up = notices;
                given_up[0].status = Status::Resolved;
                let mut outbox = inner.outbox.lock().await;
                outbox.mark(&name, &given_up, Utc::now());
                journal(&inner, &name, &given_up).await;
            }
            Err(error) if error.is_permanent() && notices.len() > 1 => {
                inner.metrics.failed(&name, error.reason());
                tracing::warn!(receiver = %name, %error, "a batch of alerts was refused; sending them one at a time");
                one_at_a_time = notices.len();
            }
            Err(error) => {
                failed(&inner, &name, &error, wait).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                wait = (wait * 2).min(inner.timing.retry_max);
            }
        }
    }
}

/// Records that `name` took `notices`, and that it works again if it was down.
async fn delivered(inner: &Inner, name: &str, notices: &[Notice]) {
    let mut outbox = inner.outbox.lock().await;
    outbox.mark(name, notices, Utc::now());
    journal(inner, name, notices).await;
    let recovered = outbox.down.get(name).copied();
    if let Some(since) = recovered {
        // On record first: an outage on record always ends on record.
        tracing::info!(receiver = %name, "the alert receiver takes deliveries again");
        mark(
            inner,
            "alert-receiver-recovered",
            format!(
                "receiver {name} takes alerts again; deliveries had failed since {}",
                since.to_rfc3339()
            ),
        );
        outbox.down.remove(name);
        snapshot(inner, &mut outbox).await;
    }
    drop(outbox);
    for status in [Status::Firing, Status::Resolved] {
        let count = notices.iter().filter(|n| n.status == status).count() as u64;
        if count > 0 {
            inner.metrics.sent(name, status.as_str(), count);
        }
    }
    inner.metrics.set_up(name, true);
    inner
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), ReceiverHealth::default());
}

/// Records that a delivery to `name` failed with `error`, and archives it as down once it
/// has failed for `down_after`.
async fn failed(inner: &Inner, name: &str, error: &DeliveryError, wait: Duration) {
    inner.metrics.failed(name, error.reason());
    inner.metrics.set_up(name, false);
    let now = Utc::now();
    let since = {
        let mut health = inner.health.lock().unwrap_or_else(|p| p.into_inner());
        let entry = health.entry(name.to_owned()).or_default();
        entry.error = Some(error.to_string());
        *entry.failing_since.get_or_insert(now)
    };
    tracing::warn!(receiver = %name, %error, retry_in = ?wait, "an alert delivery failed");
    let long = (now - since)
        .to_std()
        .is_ok_and(|d| d >= inner.timing.down_after);
    if !long {
        return;
    }
    let mut outbox = inner.outbox.lock().await;
    if !outbox.down.contains_key(name) {
        // On record first: the outbox never says down without the record.
        mark(
            inner,
            "alert-receiver-down",
            format!(
                "receiver {name} has refused alerts since {}: {error}; they are kept and sent once it takes them",
                since.to_rfc3339()
            ),
        );
        outbox.down.insert(name.to_owned(), since);
        snapshot(inner, &mut outbox).await;
    }
    drop(outbox);
    if let Some(entry) = inner
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(name)
    {
        entry.down = true;
    }
}
