//! The outbox: alerts made from the archive log's records, and what each receiver has been
//! sent. No I/O: the [`runner`](super::runner) reads the log into it, persists it and sends
//! what it says is pending.
//!
//! Invariants:
//! - every matched rule of a `message` or `file_offer` record counts as a hit; hits of one
//!   rule by one sender (their person, else their handle) whose records fall within the
//!   window opened by the first are one [`Alert`] with a count, identified by the writer and
//!   sequence number of its first record and the rule's place among that record's matches,
//!   so ids are unique and reading the same records again makes the same alerts with the
//!   same ids;
//! - an alert is sent to each receiver that takes its severity at most twice: once firing,
//!   once resolved (with the final count), and each only after the one before; the
//!   resolution is due when the window has closed and, for a receiver that learned of the
//!   alert late (it was down), once the alert has been firing there for a window's length, so
//!   that a receiver which only notifies of what it saw firing (Alertmanager) sees it firing;
//!   an alert leaves the outbox only when every such receiver has its resolution;
//! - past [`MOST_ALERTS`] alerts kept, a hit that opens no window of its own is counted in
//!   its rule's alert for every sender (`*`), whose window is at least ten minutes, so no hit
//!   is lost and the outbox grows by six alerts per rule and hour at most; an alert's text is cut to [`MOST_TEXT`] bytes;
//! - alerts are retired only when the caller takes a snapshot ([`Outbox::retire`]), so
//!   reading the log again from a snapshot makes the same decisions the running outbox
//!   made.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use imgate_crds::policy::{Protocol, Severity};
use serde::{Deserialize, Serialize};

use crate::archive::record::{Body, Participant, Record};
use crate::inspect::policy::Action;

/// The most alerts kept at once.
pub const MOST_ALERTS: usize = 10_000;

/// The sender of an alert that counts many senders' hits, once [`MOST_ALERTS`] are kept.
pub const MANY_SENDERS: &str = "*";

/// The least window of an alert for every sender.
const MANY_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// One alert: a rule's hits by one sender within a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<writer>-<seq>.<n>`: the first hit's record, and which of the rules it matched.
    pub id: String,
    /// `policy/rule`.
    pub rule: String,
    /// The rule's severity (the highest seen, if the policy changed meanwhile).
    pub severity: Severity,
    /// Who.
    pub sender: Participant,
    /// The protocol of the first hit.
    pub protocol: Protocol,
    /// The first hit's conversation: with `record`, where a console shows it.
    pub conv: String,
    /// The first hit's record, `<writer>/<seq>`.
    pub record: String,
    /// When the first hit happened.
    pub first: DateTime<Utc>,
    /// When the last hit happened.
    pub last: DateTime<Utc>,
    /// When the window closes and the alert resolves.
    pub closes: DateTime<Utc>,
    /// Hits.
    pub count: u64,
    /// The strongest action taken on a hit (`allow` when the rule only alerts or watches).
    pub action: Action,
    /// The first hit's text, kept only when a receiver takes text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// What each receiver has been sent, by receiver name.
    #[serde(default)]
    pub sent: BTreeMap<String, Sent>,
}

impl Alert {
    /// Whether the window has closed at `now`.
    pub fn closed(&self, now: DateTime<Utc>) -> bool {
        now >= self.closes
    }

    /// The window's length.
    pub fn window(&self) -> chrono::Duration {
        self.closes - self.first
    }

    /// When a receiver that took the alert firing at `fired_at` is due its resolution.
    pub fn resolves_at(&self, fired_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        fired_at.map_or(self.closes, |at| {
            self.closes
                .max(at.checked_add_signed(self.window()).unwrap_or(at))
        })
    }
}

/// What one receiver has been sent of one alert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The alert, firing.
    pub firing: bool,
    /// Its resolution.
    pub resolved: bool,
    /// When it took the alert firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The window is open.
    Firing,
    /// The window has closed; `count` is final.
    Resolved,
}

impl Status {
    /// `firing`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One thing to send: an alert as it stands, firing or resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Which.
    pub status: Status,
    /// The alert (its text only when the receiver takes text).
    pub alert: Alert,
}

/// What a receiver takes, as the outbox needs it.
#[derive(Debug, Clone)]
pub struct Wants {
    /// Its name.
    pub name: String,
    /// The least severity it takes.
    pub min_severity: Severity,
    /// Whether it takes text.
    pub include_text: bool,
}

impl Wants {
    fn takes(&self, alert: &Alert) -> bool {
        alert.severity >= self.min_severity
    }
}

/// The outbox, persisted as `alerts/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outbox {
    /// The last record read.
    pub cursor: u64,
    /// The alerts kept, oldest first.
    pub alerts: Vec<Alert>,
    /// Receivers archived as down (`alert-receiver-down`), and since when they failed, until
    /// one takes deliveries again (across restarts, so that each outage on record ends on
    /// record too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub down: BTreeMap<String, DateTime<Utc>>,
    /// Open alerts by (rule, sender key), into `alerts`.
    #[serde(skip)]
    open: HashMap<(String, String), usize>,
    /// Alerts by id, into `alerts`.
    #[serde(skip)]
    by_id: HashMap<String, usize>,
}

impl Outbox {
    /// An empty outbox that reads the log from the record after `cursor`.
    pub fn starting_after(cursor: u64) -> Self {
        Self {
            cursor,
            ..Self::default()
        }
    }

    /// The outbox as persisted, its index rebuilt.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut outbox: Outbox = serde_json::from_slice(bytes)?;
        outbox.reindex();
        Ok(outbox)
    }

    /// The outbox to persist as [`retire`](Self::retire) would leave it, without changing it
    /// (so that it is changed only once the snapshot is saved).
    pub fn to_json_retired(&self, receivers: &[Wants], now: DateTime<Utc>) -> Vec<u8> {
        #[derive(Serialize)]
        struct View<'a> {
            cursor: u64,
            alerts: Vec<&'a Alert>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            down: &'a BTreeMap<String, DateTime<Utc>>,
        }
        let view = View {
            cursor: self.cursor,
            alerts: self
                .alerts
                .iter()
                .filter(|alert| !done(alert, receivers, now))
                .collect(),
            down: &self.down,
        };
        serde_json::to_vec(&view).unwrap_or_else(|e| unreachable!("the outbox serializes: {e}"))
    }

    /// The outbox to persist.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("the outbox serializes: {e}"))
    }

    fn reindex(&mut self) {
        self.open.clear();
        self.by_id.clear();
        for (i, alert) in self.alerts.iter().enumerate() {
            self.open
                .insert((alert.rule.clone(), sender_key(&alert.sender)), i);
            self.by_id.insert(alert.id.clone(), i);
        }
    }

    /// Reads record `seq` (the next after [`cursor`](Self::cursor)): each rule it matched is a
    /// hit. `keep_text` keeps the first hit's text for receivers that take it.
    pub fn read(&mut self, seq: u64, record: &Record, window: Duration, keep_text: bool) {
        self.cursor = self.cursor.max(seq);
        let (from, protocol, verdict, text) = match &record.body {
            Body::Message {
                from,
                protocol,
                verdict,
                text,
                ..
            } => (from, *protocol, verdict, Some(text.as_str())),
            Body::FileOffer {
                from,
                protocol,
                verdict,
                name,
                ..
            } => (from, *protocol, verdict, Some(name.as_str())),
            _ => return,
        };
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        for (n, (rule, severity)) in verdict.matches().enumerate() {
            let mut key = (rule.to_owned(), sender_key(from));
            let open = |outbox: &Self, key: &(String, String)| {
                outbox
                    .open
                    .get(key)
                    .copied()
                    .filter(|&i| record.ts < outbox.alerts[i].closes)
            };
            if open(self, &key).is_none() && self.alerts.len() >= MOST_ALERTS {
                key.1 = MANY_SENDERS.to_owned();
            }
            if let Some(i) = open(self, &key) {
                let alert = &mut self.alerts[i];
                alert.count += 1;
                alert.last = alert.last.max(record.ts);
                alert.severity = alert.severity.max(severity);
                alert.action = alert.action.max(verdict.action);
                continue;
            }
            let many = key.1 == MANY_SENDERS;
            let sender = if many {
                Participant {
                    handle: MANY_SENDERS.into(),
                    person: None,
                }
            } else {
                from.clone()
            };
            // Past the cap, a rule's alert for every sender spans at least MANY_WINDOW.
            let span = if many {
                window.max(MANY_WINDOW)
            } else {
                window
            };
            self.alerts.push(Alert {
                id: format!("{}-{seq}.{n}", record.writer),
                rule: rule.to_owned(),
                severity,
                sender,
                protocol,
                conv: record.conv.clone(),
                record: format!("{}/{seq}", record.writer),
                first: record.ts,
                last: record.ts,
                closes: record.ts.checked_add_signed(span).unwrap_or(record.ts),
                count: 1,
                action: verdict.action,
                text: text.filter(|_| keep_text).map(clip),
                sent: BTreeMap::new(),
            });
            let i = self.alerts.len() - 1;
            self.by_id.insert(self.alerts[i].id.clone(), i);
            self.open.insert(key, i);
        }
    }

    /// Up to `limit` notices `receiver` has not been sent, oldest alert first: an alert
    /// firing, or resolved once due at `now` ([`Alert::resolves_at`]).
    pub fn pending(&self, receiver: &Wants, now: DateTime<Utc>, limit: usize) -> Vec<Notice> {
        self.alerts
            .iter()
            .filter(|alert| receiver.takes(alert))
            .filter_map(|alert| {
                let sent = alert.sent.get(&receiver.name).copied().unwrap_or_default();
                let status = if !sent.firing {
                    Status::Firing
                } else if !sent.resolved && now >= alert.resolves_at(sent.fired_at) {
                    Status::Resolved
                } else {
                    return None;
                };
                let mut alert = alert.clone();
                alert.sent.clear();
                if !receiver.include_text {
                    alert.text = None;
                }
                Some(Notice { status, alert })
            })
            .take(limit)
            .collect()
    }

    /// How many notices `receiver` has not been sent (firing, or resolved and due at `now`).
    pub fn backlog(&self, receiver: &Wants, now: DateTime<Utc>) -> usize {
        self.alerts
            .iter()
            .filter(|alert| receiver.takes(alert))
            .filter(|alert| {
                let sent = alert.sent.get(&receiver.name).copied().unwrap_or_default();
                !sent.firing || (!sent.resolved && now >= alert.resolves_at(sent.fired_at))
            })
            .count()
    }

    /// Records that `receiver` took `notices` at `now`.
    pub fn mark(&mut self, receiver: &str, notices: &[Notice], now: DateTime<Utc>) {
        for notice in notices {
            self.mark_one(receiver, &notice.alert.id, notice.status, now);
        }
    }

    /// Records that `receiver` took alert `id` as `status` at `at` (nothing when the alert is
    /// no longer kept).
    pub fn mark_one(&mut self, receiver: &str, id: &str, status: Status, at: DateTime<Utc>) {
        let Some(&i) = self.by_id.get(id) else {
            return;
        };
        let sent = self.alerts[i].sent.entry(receiver.to_owned()).or_default();
        match status {
            Status::Firing => {
                sent.firing = true;
                sent.fired_at = Some(at);
            }
            Status::Resolved => {
                sent.firing = true;
                sent.resolved = true;
            }
        }
    }

    /// Removes alerts whose window has closed and that every receiver taking them has seen
    /// resolved; returns how many.
    pub fn retire(&mut self, receivers: &[Wants], now: DateTime<Utc>) -> usize {
        let before = self.alerts.len();
        self.alerts.retain(|alert| !done(alert, receivers, now));
        let retired = before - self.alerts.len();
        if retired > 0 {
            self.reindex();
        }
        retired
    }

    /// When the next resolution falls due for `receiver`.
    pub fn next_due(&self, receiver: &Wants, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.alerts
            .iter()
            .filter(|alert| receiver.takes(alert))
            .map(|alert| {
                let sent = alert.sent.get(&receiver.name).copied().unwrap_or_default();
                alert.resolves_at(sent.fired_at)
            })
            .filter(|due| *due > now)
            .min()
    }
}

/// Whether `alert` is over: its window closed and every receiver taking it has seen it
/// resolved.
fn done(alert: &Alert, receivers: &[Wants], now: DateTime<Utc>) -> bool {
    alert.closed(now)
        && receivers.iter().all(|receiver| {
            !receiver.takes(alert) || alert.sent.get(&receiver.name).is_some_and(|s| s.resolved)
        })
}

/// The most of a message's text an alert carries.
pub const MOST_TEXT: usize = 4096;

/// `text`, cut to [`MOST_TEXT`] bytes (on a character boundary, marked with `…`).
fn clip(text: &str) -> String {
    if text.len() <= MOST_TEXT {
        return text.to_owned();
    }
    let mut end = MOST_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Who a hit is attributed to: the person when known, else the handle.
fn sender_key(sender: &Participant) -> String {
    sender
        .person
        .clone()
        .unwrap_or_else(|| sender.handle.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::archive::record::RecordedVerdict;
    use crate::archive::record::tests::message;

    /// A firing notice of a high-severity alert that began 2027-01-15 08:00 UTC.
    pub(crate) fn sample() -> Notice {
        let first = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        Notice {
            status: Status::Firing,
            alert: Alert {
                id: "dp-0-7".into(),
                rule: "firm/promissory".into(),
                severity: Severity::High,
                sender: Participant {
                    handle: "jane@chat.example".into(),
                    person: Some("jane.doe@acme.example".into()),
                },
                protocol: Protocol::Xmpp,
                conv: "xmpp:jane@chat.example/bob@chat.example".into(),
                record: "dp-0/7".into(),
                first,
                last: first,
                closes: first + chrono::Duration::minutes(10),
                count: 2,
                action: Action::Allow,
                text: None,
                sent: BTreeMap::new(),
            },
        }
    }

    fn hit(seq: u64, secs: i64, rule: &str, severity: Severity) -> Record {
        let mut record = message(seq, "promise you a 20% return");
        record.ts = DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time");
        if let Body::Message { verdict, .. } = &mut record.body {
            *verdict = RecordedVerdict {
                action: Action::Allow,
                monitor: Action::Allow,
                rules: vec![rule.into()],
                severities: vec![severity],
            };
        }
        record
    }

    fn wants(name: &str, min: Severity, text: bool) -> Wants {
        Wants {
            name: name.into(),
            min_severity: min,
            include_text: text,
        }
    }

    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn hits_within_a_window_are_one_alert_with_a_count_then_it_resolves() {
        let mut outbox = Outbox::default();
        for (seq, secs) in [(1, 0), (2, 30), (3, 599)] {
            outbox.read(
                seq,
                &hit(seq, secs, "firm/promissory", Severity::High),
                WINDOW,
                false,
            );
        }
        outbox.read(
            4,
            &hit(4, 600, "firm/promissory", Severity::High),
            WINDOW,
            false,
        );
        assert_eq!(
            outbox.alerts.len(),
            2,
            "the fourth hit falls in a new window"
        );
        assert_eq!(outbox.alerts[0].count, 3);
        assert_eq!(outbox.alerts[0].id, "dp-0-1.0");
        assert_eq!(outbox.alerts[1].id, "dp-0-4.0");
        assert_eq!(outbox.cursor, 4);

        let siem = wants("siem", Severity::Low, false);
        let during = outbox.alerts[0].first + chrono::Duration::seconds(10);
        let firing = outbox.pending(&siem, during, 10);
        assert_eq!(firing.len(), 2);
        assert!(firing.iter().all(|n| n.status == Status::Firing));
        assert!(firing[0].alert.text.is_none(), "no text unless asked for");
        outbox.mark("siem", &firing, during);
        assert!(outbox.pending(&siem, during, 10).is_empty(), "none twice");

        let after = outbox.alerts[0].resolves_at(Some(during));
        assert!(
            outbox
                .pending(&siem, outbox.alerts[0].closes, 10)
                .is_empty(),
            "resolved a window after it fired there"
        );
        let resolved = outbox.pending(&siem, after, 10);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, Status::Resolved);
        assert_eq!(resolved[0].alert.count, 3);
        outbox.mark("siem", &resolved, after);
        assert_eq!(outbox.retire(std::slice::from_ref(&siem), after), 1);
        assert_eq!(outbox.alerts.len(), 1);
    }

    #[test]
    fn a_receiver_that_learns_of_an_alert_late_sees_it_firing_for_a_window_first() {
        let mut outbox = Outbox::default();
        outbox.read(
            1,
            &hit(1, 0, "firm/promissory", Severity::High),
            WINDOW,
            false,
        );
        let am = wants("am", Severity::Low, false);
        // The receiver was down for the whole window: it gets the alert firing first.
        let late = outbox.alerts[0].closes + chrono::Duration::seconds(30);
        let notices = outbox.pending(&am, late, 10);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].status, Status::Firing);
        outbox.mark("am", &notices, late);
        assert!(
            outbox.pending(&am, late, 10).is_empty(),
            "not resolved at once"
        );
        let due = late + chrono::Duration::from_std(WINDOW).expect("window");
        assert_eq!(outbox.next_due(&am, late), Some(due));
        assert!(
            outbox
                .pending(&am, due - chrono::Duration::seconds(1), 10)
                .is_empty()
        );
        assert_eq!(outbox.pending(&am, due, 10)[0].status, Status::Resolved);
    }

    #[test]
    fn receivers_get_only_their_severities_and_text_only_when_they_ask() {
        let mut outbox = Outbox::default();
        outbox.read(1, &hit(1, 0, "firm/low", Severity::Low), WINDOW, true);
        outbox.read(
            2,
            &hit(2, 0, "firm/critical", Severity::Critical),
            WINDOW,
            true,
        );
        let pager = wants("pager", Severity::High, true);
        let siem = wants("siem", Severity::Low, false);
        let now = outbox.alerts[0].first;
        let paged = outbox.pending(&pager, now, 10);
        assert_eq!(paged.len(), 1);
        assert_eq!(paged[0].alert.rule, "firm/critical");
        assert_eq!(
            paged[0].alert.text.as_deref(),
            Some("promise you a 20% return")
        );
        assert!(
            outbox
                .pending(&siem, now, 10)
                .iter()
                .all(|n| n.alert.text.is_none())
        );
        // Closed and resolved at the pager, but the SIEM still waits for the critical one.
        let later = outbox.alerts[0].closes;
        let much_later = later + chrono::Duration::from_std(WINDOW).expect("window");
        outbox.mark("pager", &outbox.pending(&pager, later, 10), later);
        outbox.mark("pager", &outbox.pending(&pager, much_later, 10), much_later);
        assert_eq!(outbox.retire(&[pager.clone(), siem.clone()], much_later), 0);
        outbox.mark("siem", &outbox.pending(&siem, later, 10), later);
        outbox.mark("siem", &outbox.pending(&siem, much_later, 10), much_later);
        assert_eq!(outbox.retire(&[pager, siem], much_later), 2);
    }

    #[test]
    fn a_message_matching_two_rules_makes_two_alerts_with_ids_of_their_own() {
        let mut record = hit(9, 0, "firm/promissory", Severity::High);
        if let Body::Message { verdict, .. } = &mut record.body {
            verdict.rules.push("firm/card-numbers".into());
            verdict.severities.push(Severity::Medium);
        }
        let mut outbox = Outbox::default();
        outbox.read(9, &record, WINDOW, false);
        let ids: Vec<(&str, &str, Severity)> = outbox
            .alerts
            .iter()
            .map(|a| (a.id.as_str(), a.rule.as_str(), a.severity))
            .collect();
        assert_eq!(
            ids,
            [
                ("dp-0-9.0", "firm/promissory", Severity::High),
                ("dp-0-9.1", "firm/card-numbers", Severity::Medium)
            ]
        );
        let siem = wants("siem", Severity::Low, false);
        let firing = outbox.pending(&siem, record.ts, 10);
        outbox.mark("siem", &firing[..1], record.ts);
        assert_eq!(outbox.pending(&siem, record.ts, 10)[0].alert.id, "dp-0-9.1");
    }

    #[test]
    fn reading_the_same_records_again_makes_the_same_alerts() {
        let records: Vec<Record> = (1..=20)
            .map(|seq| hit(seq, seq as i64 * 50, "firm/promissory", Severity::Medium))
            .collect();
        let mut first = Outbox::default();
        for record in &records {
            first.read(record.seq, record, WINDOW, false);
        }
        let mut again = Outbox::from_json(&Outbox::default().to_json()).expect("parses");
        for record in &records {
            again.read(record.seq, record, WINDOW, false);
        }
        assert_eq!(first.alerts, again.alerts);
        let restored = Outbox::from_json(&first.to_json()).expect("parses");
        assert_eq!(restored.alerts, first.alerts);
    }

    #[test]
    fn past_the_limit_further_senders_share_one_alert_per_rule() {
        let mut outbox = Outbox::default();
        for seq in 1..=(MOST_ALERTS as u64 + 5) {
            let mut record = hit(seq, 0, "firm/worm", Severity::High);
            if let Body::Message { from, .. } = &mut record.body {
                from.person = Some(format!("person-{seq}"));
            }
            outbox.read(seq, &record, WINDOW, false);
        }
        assert_eq!(outbox.alerts.len(), MOST_ALERTS + 1);
        let many = outbox.alerts.last().expect("one more");
        assert_eq!(many.sender.handle, MANY_SENDERS);
        assert_eq!(many.count, 5, "no hit is lost");
        // A sender already kept whose window has closed opens no alert of its own either.
        let mut late = hit(MOST_ALERTS as u64 + 6, 601, "firm/worm", Severity::High);
        if let Body::Message { from, .. } = &mut late.body {
            from.person = Some("person-1".into());
        }
        outbox.read(late.seq, &late, WINDOW, false);
        assert_eq!(
            outbox.alerts.len(),
            MOST_ALERTS + 2,
            "one more window for the rule"
        );
        assert_eq!(
            outbox.alerts.last().map(|a| a.sender.handle.as_str()),
            Some(MANY_SENDERS)
        );
    }

    #[test]
    fn a_snapshot_is_what_retiring_would_leave_without_retiring() {
        let mut outbox = Outbox::default();
        outbox.read(1, &hit(1, 0, "firm/a", Severity::High), WINDOW, false);
        outbox.read(2, &hit(2, 0, "firm/b", Severity::High), WINDOW, false);
        let siem = wants("siem", Severity::Low, false);
        let now = outbox.alerts[0].first;
        let later = outbox.alerts[0].closes + chrono::Duration::from_std(WINDOW).expect("w");
        let first = outbox.pending(&siem, now, 1);
        outbox.mark("siem", &first, now);
        outbox.mark("siem", &outbox.pending(&siem, later, 1), later);
        let receivers = [siem];
        let json = outbox.to_json_retired(&receivers, later);
        assert_eq!(outbox.alerts.len(), 2, "nothing changed yet");
        let mut retired = outbox.clone();
        assert_eq!(retired.retire(&receivers, later), 1);
        assert_eq!(json, retired.to_json());
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MOST_TEXT);
        let cut = clip(&long);
        assert!(
            cut.len() <= MOST_TEXT + '…'.len_utf8() && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert_eq!(clip("short"), "short");
    }
}
