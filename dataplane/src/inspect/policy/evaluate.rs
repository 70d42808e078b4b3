//! Evaluation: one event and the compiled policy in, one [`Verdict`] out.
//!
//! Precedence (documented for users in `docs/policy.md`):
//! - a policy applies to an event when its subjects match the sender;
//! - *settings* (protocol, service and TLS decisions, file transfer, rate limit, worm
//!   containment, disclaimer) are decided by the applicable policy of highest precedence that
//!   has the section (and for protocols, names the protocol or sets a default);
//! - *detections* (content rules, URL rules, blocked features) accumulate over every
//!   applicable policy;
//! - the most severe action wins: quarantine > block > redact > allow;
//! - enforce-mode and monitor-mode policies are evaluated apart: monitor findings fill
//!   `Verdict::monitor` and never change the event, the sender's quarantine or a disclaimer.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use imgate_crds::policy::{Decision, PolicyMode, Protocol, Severity, TlsMode};

use super::compile::{CompiledPolicy, PolicyEntry};
use super::normalize::Normalized;
use super::tracker::SenderTracker;
use super::verdict::{Action, Alert, RuleMatch, Span, Verdict, merge_spans};
use super::visible::Visible;
use crate::inspect::event::{Content, Event, FileOffer};

/// Mutable state used while evaluating: the sender tracker and reusable buffers. One per
/// tenant per dataplane; the compiled policy itself stays shared and immutable.
#[derive(Debug, Default)]
pub struct PolicyState {
    /// Rate limits, fan-out and quarantine.
    pub tracker: SenderTracker,
    normalized: Normalized,
    visible: Visible,
    hits: Vec<(u32, Span)>,
    findings: Vec<crate::inspect::policy::detectors::Finding>,
}

/// Both modes, enforce first.
const MODES: [PolicyMode; 2] = [PolicyMode::Enforce, PolicyMode::Monitor];

/// Rule matches being gathered for one verdict.
struct Gathered {
    matches: Vec<RuleMatch>,
    severities: Vec<Severity>,
    notices: Vec<(usize, String)>,
    /// Index of the policy behind each match (for quarantine lengths and notices).
    policies: Vec<usize>,
}

impl Gathered {
    /// Records a match of `rule` from the policy at index `origin.0`, alerting at `origin.1`.
    fn push(
        &mut self,
        origin: (usize, Severity),
        rule: &Arc<str>,
        mode: PolicyMode,
        action: Action,
        spans: Vec<Span>,
        reason: String,
    ) {
        let (policy, severity) = origin;
        self.matches.push(RuleMatch {
            rule: rule.clone(),
            mode,
            action,
            spans,
            reason,
        });
        self.severities.push(severity);
        self.policies.push(policy);
    }

    fn notify(&mut self, template: Option<&String>, rule: &str) {
        if let Some(template) = template {
            let policy = rule.split('/').next().unwrap_or_default();
            let text = template.replace("{rule}", rule).replace("{policy}", policy);
            self.notices.push((self.matches.len() - 1, text));
        }
    }
}

impl CompiledPolicy {
    /// Evaluates one event. `state` must be this tenant's; it is updated (rate limits,
    /// fan-out, quarantine) only as the enforce-mode verdict and the monitor bookkeeping require.
    pub fn evaluate(&self, event: &Event, state: &mut PolicyState) -> Verdict {
        let applicable = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.subjects.matches(&event.sender))
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        let mut gathered = Gathered {
            matches: Vec::new(),
            severities: Vec::new(),
            notices: Vec::new(),
            policies: Vec::new(),
        };
        let handle = event.sender.handle.as_str();

        if let Some((rule, until)) = state.tracker.quarantined(handle, event.at_ms) {
            let policy = self
                .policies
                .iter()
                .position(|p| rule.starts_with(&*p.name))
                .unwrap_or_default();
            let reason = format!(
                "sender is quarantined by {rule} for {} more seconds",
                (until - event.at_ms).div_ceil(1000)
            );
            gathered.push(
                (policy, Severity::High),
                &rule,
                PolicyMode::Enforce,
                Action::Block,
                Vec::new(),
                reason,
            );
        }

        // Rules match the text people see; their spans are mapped back to the original below.
        let mut visible = std::mem::take(&mut state.visible);
        let shown = match &event.content {
            Content::Message { text } => {
                visible.render(text, event.protocol == Protocol::Irc);
                visible.as_str(text)
            }
            _ => "",
        };
        for mode in MODES {
            let of_mode = self.of_mode(applicable, mode);
            self.protocol_rules(event, mode, of_mode, &mut gathered);
            match &event.content {
                Content::Message { .. } => {
                    self.rate_rule(event, mode, of_mode, state, &mut gathered);
                    self.url_rules(event, shown, mode, of_mode, state, &mut gathered);
                }
                Content::File(offer) => {
                    self.file_rules(event, offer, mode, of_mode, state, &mut gathered)
                }
                Content::Session | Content::Feature(_) => {}
            }
        }
        if let Content::Message { .. } = &event.content {
            self.content_rules(event, shown, applicable, state, &mut gathered);
        }
        for span in gathered.matches.iter_mut().flat_map(|m| &mut m.spans) {
            *span = visible.original_span(*span);
        }
        state.visible = visible;
        self.finish(event, applicable, state, gathered)
    }

    /// The policies of `mode` among `applicable`, as a bit mask.
    fn of_mode(&self, applicable: u64, mode: PolicyMode) -> u64 {
        members(applicable)
            .filter(|i| self.policies[*i].mode == mode)
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The first policy in `policies` (in precedence order) that has the section.
    fn first<'a, T>(
        &'a self,
        policies: u64,
        section: impl Fn(&'a PolicyEntry) -> Option<T>,
    ) -> Option<(usize, T)> {
        members(policies).find_map(|i| section(&self.policies[i]).map(|s| (i, s)))
    }

    fn protocol_rules(
        &self,
        event: &Event,
        mode: PolicyMode,
        of_mode: u64,
        gathered: &mut Gathered,
    ) {
        let protocol = event.protocol;
        let decided = self.first(of_mode, |p| {
            let settings = p.protocols.as_ref()?;
            let decision = if settings.block.contains(&protocol) {
                Decision::Block
            } else if settings.allow.contains(&protocol) {
                Decision::Allow
            } else {
                settings.default?
            };
            Some((decision, &settings.rule))
        });
        if let Some((policy, (Decision::Block, rule))) = decided {
            gathered.push(
                (policy, Severity::Medium),
                rule,
                mode,
                Action::Block,
                Vec::new(),
                format!("protocol {} is blocked", protocol.as_str()),
            );
        }
        if let Some(service) = &event.service {
            let decided = self.first(of_mode, |p| {
                let settings = p.protocols.as_ref()?;
                if settings.services_block.contains(service) {
                    Some((true, &settings.services_rule))
                } else if settings.services_allow.contains(service) {
                    Some((false, &settings.services_rule))
                } else {
                    None
                }
            });
            if let Some((policy, (true, rule))) = decided {
                gathered.push(
                    (policy, Severity::Medium),
                    rule,
                    mode,
                    Action::Block,
                    Vec::new(),
                    format!("service {service} is blocked"),
                );
            }
        }
        if let Content::Feature(feature) = &event.content {
            for policy in members(of_mode) {
                if let Some(settings) = &self.policies[policy].protocols
                    && settings.block_features.contains(feature)
                {
                    let reason = format!("feature {} is blocked", feature.as_str());
                    gathered.push(
                        (policy, Severity::Low),
                        &settings.features_rule,
                        mode,
                        Action::Block,
                        Vec::new(),
                        reason,
                    );
                }
            }
        }
    }

    fn rate_rule(
        &self,
        event: &Event,
        mode: PolicyMode,
        of_mode: u64,
        state: &mut PolicyState,
        gathered: &mut Gathered,
    ) {
        if let Some((policy, (spec, action, rule))) = self.first(of_mode, |p| p.rate.as_ref())
            && state
                .tracker
                .over_rate(&event.sender.handle, mode, *spec, event.at_ms)
        {
            let reason = format!("more than {} messages in {} ms", spec.messages, spec.per_ms);
            gathered.push(
                (policy, Severity::Low),
                rule,
                mode,
                *action,
                Vec::new(),
                reason,
            );
        }
    }

    fn url_rules(
        &self,
        event: &Event,
        text: &str,
        mode: PolicyMode,
        of_mode: u64,
        state: &mut PolicyState,
        gathered: &mut Gathered,
    ) {
        if !self.needs_urls {
            return;
        }
        let mut found: Vec<(Option<Span>, &str)> = Vec::new();
        self.urls.find(text, &mut |span| {
            found.push((Some(span), &text[span.start..span.end]))
        });
        found.extend(event.urls.iter().map(|u| (None, u.as_str())));
        if found.is_empty() {
            return;
        }
        let hosts: Vec<Option<String>> = found
            .iter()
            .map(|(_, url)| super::urls::host_of(url))
            .collect();
        for policy in members(of_mode) {
            let Some(settings) = &self.policies[policy].urls else {
                continue;
            };
            let mut spans = Vec::new();
            let mut out_of_band = false;
            for ((span, _), host) in found.iter().zip(&hosts) {
                let Some(host) = host else { continue };
                let blocked = settings.block.as_ref().is_some_and(|b| b.matches(host))
                    && !settings.allow.as_ref().is_some_and(|a| a.matches(host));
                if blocked {
                    match span {
                        Some(span) => spans.push(*span),
                        None => out_of_band = true,
                    }
                }
            }
            if !spans.is_empty() || out_of_band {
                // A link outside the text cannot be masked: redaction becomes a block.
                let action = if out_of_band && settings.action == Action::Redact {
                    Action::Block
                } else {
                    settings.action
                };
                gathered.push(
                    (policy, Severity::Medium),
                    &settings.rule,
                    mode,
                    action,
                    spans,
                    "link to a blocked domain".into(),
                );
                gathered.notify(settings.notify.as_ref(), &settings.rule);
            }
        }
        let items: Vec<(u64, &str)> = found
            .iter()
            .map(|(_, url)| {
                (
                    fingerprint(url.trim_end_matches('/').to_ascii_lowercase()),
                    "link",
                )
            })
            .collect();
        self.worm_rule(event, mode, of_mode, state, gathered, &items);
    }

    /// Counts the fan-out of each item (a link or file fingerprint and its kind) and applies
    /// the deciding worm rule when an item reaches its threshold.
    fn worm_rule(
        &self,
        event: &Event,
        mode: PolicyMode,
        of_mode: u64,
        state: &mut PolicyState,
        gathered: &mut Gathered,
        items: &[(u64, &str)],
    ) {
        let Some((policy, (spec, action, rule))) = self.first(of_mode, |p| p.worm.as_ref()) else {
            return;
        };
        for (item, kind) in items {
            let count = state.tracker.fan_out(
                &event.sender.handle,
                mode,
                *item,
                recipients(event),
                *spec,
                event.at_ms,
            );
            if count >= spec.distinct {
                let reason = format!(
                    "the same {kind} went to {count} recipients within {} ms",
                    spec.window_ms
                );
                gathered.push(
                    (policy, Severity::Critical),
                    rule,
                    mode,
                    *action,
                    Vec::new(),
                    reason,
                );
                return;
            }
        }
    }

    fn file_rules(
        &self,
        event: &Event,
        offer: &FileOffer,
        mode: PolicyMode,
        of_mode: u64,
        state: &mut PolicyState,
        gathered: &mut Gathered,
    ) {
        if let Some((policy, settings)) = self.first(of_mode, |p| p.file.as_ref()) {
            let extension = offer
                .name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            let refused = if settings.action == Decision::Block {
                Some("file transfers are blocked".to_owned())
            } else if settings.block_extensions.contains(&extension) {
                Some(format!("files of type .{extension} are blocked"))
            } else if !settings.allow_extensions.is_empty()
                && !settings.allow_extensions.contains(&extension)
            {
                Some(format!("files of type .{extension} are not allowed"))
            } else {
                match (settings.max_size, offer.size) {
                    (Some(max), Some(size)) if size > max => {
                        Some(format!("the file is {size} bytes, over the limit of {max}"))
                    }
                    _ => None,
                }
            };
            if let Some(reason) = refused {
                gathered.push(
                    (policy, Severity::Medium),
                    &settings.rule,
                    mode,
                    Action::Block,
                    Vec::new(),
                    reason,
                );
                gathered.notify(settings.notify.as_ref(), &settings.rule);
            }
        }
        let identity = match &offer.sha256 {
            Some(hash) => fingerprint(hash.to_ascii_lowercase()),
            None => fingerprint((&offer.name, offer.size)),
        };
        self.worm_rule(event, mode, of_mode, state, gathered, &[(identity, "file")]);
    }

    fn content_rules(
        &self,
        event: &Event,
        text: &str,
        applicable: u64,
        state: &mut PolicyState,
        gathered: &mut Gathered,
    ) {
        if self.content.is_empty() {
            return;
        }
        state.hits.clear();
        if !self.keywords.is_empty() {
            state.normalized.normalize(text);
            let (normalized, hits) = (&state.normalized, &mut state.hits);
            self.keywords
                .scan(normalized.as_str(), &mut |rule, start, end| {
                    hits.push((rule, normalized.original_span(start, end)))
                });
        }
        self.patterns
            .scan(text, &mut |rule, span| state.hits.push((rule, span)));
        if !self.detectors.is_empty() {
            state.findings.clear();
            self.detectors.scan(text, &mut state.findings);
            for finding in &state.findings {
                for (detector, rule) in &self.detector_rules {
                    if *detector == finding.detector {
                        state.hits.push((*rule, finding.span));
                    }
                }
            }
        }
        if state.hits.is_empty() {
            return;
        }
        state
            .hits
            .sort_unstable_by_key(|(rule, span)| (*rule, *span));
        let mut index = 0;
        while index < state.hits.len() {
            let rule_id = state.hits[index].0;
            let next = state.hits[index..]
                .iter()
                .position(|(r, _)| *r != rule_id)
                .map_or(state.hits.len(), |n| index + n);
            let rule = &self.content[rule_id as usize];
            let direction_ok =
                rule.directions.is_empty() || rule.directions.contains(&event.direction);
            if direction_ok && applicable & (1 << rule.policy) != 0 {
                let mut spans: Vec<Span> =
                    state.hits[index..next].iter().map(|(_, s)| *s).collect();
                merge_spans(&mut spans);
                let mode = self.policies[rule.policy].mode;
                let reason = format!("matched {} time(s)", spans.len());
                gathered.push(
                    (rule.policy, rule.severity),
                    &rule.name,
                    mode,
                    rule.action,
                    spans,
                    reason,
                );
                gathered.notify(rule.notify.as_ref(), &rule.name);
            }
            index = next;
        }
    }

    fn finish(
        &self,
        event: &Event,
        applicable: u64,
        state: &mut PolicyState,
        gathered: Gathered,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        for rule in &gathered.matches {
            match rule.mode {
                PolicyMode::Enforce => verdict.action = verdict.action.max(rule.action),
                PolicyMode::Monitor => verdict.monitor = verdict.monitor.max(rule.action),
            }
        }
        if verdict.action == Action::Redact {
            verdict.redactions = gathered
                .matches
                .iter()
                .filter(|m| m.mode == PolicyMode::Enforce && m.action == Action::Redact)
                .flat_map(|m| m.spans.iter().copied())
                .collect();
            merge_spans(&mut verdict.redactions);
        }
        if verdict.action == Action::Quarantine
            && let Some(position) = gathered
                .matches
                .iter()
                .position(|m| m.mode == PolicyMode::Enforce && m.action == Action::Quarantine)
        {
            let policy = &self.policies[gathered.policies[position]];
            let until = event.at_ms.saturating_add(policy.quarantine_ms);
            state.tracker.quarantine(
                &event.sender.handle,
                until,
                gathered.matches[position].rule.clone(),
                event.at_ms,
            );
        }
        verdict.notices = gathered
            .notices
            .into_iter()
            .filter(|(index, _)| gathered.matches[*index].mode == PolicyMode::Enforce)
            .map(|(_, text)| text)
            .collect();
        verdict.alerts = gathered
            .matches
            .iter()
            .zip(&gathered.severities)
            .map(|(m, severity)| Alert {
                rule: m.rule.clone(),
                severity: *severity,
                monitor: m.mode == PolicyMode::Monitor,
            })
            .collect();
        let enforcing = self.of_mode(applicable, PolicyMode::Enforce);
        match &event.content {
            Content::Session => {
                let tls = self.first(enforcing, |p| p.protocols.as_ref()?.tls);
                verdict.tls = Some(tls.map_or(TlsMode::Passthrough, |(_, mode)| mode));
                verdict.disclaimer = self
                    .first(enforcing, |p| p.disclaimer.clone())
                    .map(|(_, d)| d);
            }
            Content::Message { .. } => {
                verdict.disclaimer = self
                    .first(enforcing, |p| p.disclaimer.clone())
                    .map(|(_, d)| d);
            }
            Content::File(_) => {
                verdict.scan = verdict.action == Action::Allow
                    && self
                        .first(enforcing, |p| p.file.as_ref().map(|f| f.scan))
                        .is_some_and(|(_, scan)| scan);
            }
            Content::Feature(_) => {}
        }
        verdict.matches = gathered.matches;
        verdict
    }
}

/// The indices set in a policy mask, lowest (highest precedence) first.
fn members(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let index = (mask != 0).then(|| mask.trailing_zeros() as usize)?;
        mask &= mask - 1;
        Some(index)
    })
}

/// Who received an event, for fan-out counting: the room counts as one recipient.
fn recipients(event: &Event) -> Vec<&str> {
    match &event.room {
        Some(room) => vec![room.as_str()],
        None => event.recipients.iter().map(String::as_str).collect(),
    }
}

fn fingerprint(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
