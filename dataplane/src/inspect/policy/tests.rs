//! Engine tests: whole policies, written as users write them, against events.

use imgate_crds::IMPolicy;
use imgate_crds::policy::{Direction, Feature, Protocol, TlsMode};
use proptest::prelude::*;

use super::*;
use crate::inspect::event::{Content, ConversationKind, Event, FileOffer, Party};

fn policies(yaml: &str) -> Vec<IMPolicy> {
    serde_saphyr::from_multiple(yaml).expect("test policies parse")
}

fn compile(yaml: &str) -> CompiledPolicy {
    CompiledPolicy::compile("acme", &policies(yaml)).expect("test policies compile")
}

fn message(handle: &str, text: &str) -> Event {
    Event {
        tenant: "acme".into(),
        protocol: Protocol::Xmpp,
        service: None,
        direction: Direction::Outbound,
        sender: Party {
            handle: handle.into(),
            person: None,
            groups: Vec::new(),
        },
        recipients: vec!["bob@chat.example".into()],
        room: None,
        conversation: ConversationKind::Direct,
        content: Content::Message { text: text.into() },
        urls: Vec::new(),
        at_ms: 1_000_000,
    }
}

fn names(verdict: &Verdict) -> Vec<&str> {
    verdict.rule_names().collect()
}

const STRICT: &str = r#"
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: strict, namespace: acme}
spec:
  tenantRef: acme
  priority: 100
  subjects: {groups: [traders]}
  protocols: {allow: [xmpp], block: [irc, bittorrent], services: {block: [whatsapp]}, blockFeatures: [voice], tls: intercept}
  fileTransfer: {action: allow, maxSize: 1Mi, blockExtensions: [exe], scan: true, notify: {sender: "file refused by {rule}"}}
  content:
    - {name: cards, match: {detector: credit-card}, action: redact}
    - name: deals
      match: {keywords: ["project falcon", "operation heron"]}
      action: block
      severity: high
      notify: {sender: "Blocked by policy {rule}"}
    - {name: wires, match: {regex: "(?i)wire\\s+\\d+k"}, action: alert, directions: [outbound]}
  urls: {block: {domains: ["*.bad.example"]}, allow: {domains: ["ok.bad.example"]}}
  disclaimer: {text: "Messages are recorded."}
  worm: {distinctRecipients: 3, window: 60s}
  quarantineFor: 10m
---
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: baseline, namespace: acme}
spec:
  tenantRef: acme
  priority: 10
  protocols: {allow: [xmpp, irc], default: block}
  content:
    - {name: ssn, match: {detector: us-ssn}, action: block}
  rateLimit: {messages: 3, per: 1m}
---
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: discovery, namespace: acme}
spec:
  tenantRef: acme
  mode: monitor
  content:
    - {name: secrets, match: {detector: aws-access-key}, action: quarantine}
    - {name: gossip, match: {keywords: [rumour]}, action: block}
"#;

fn trader(text: &str) -> Event {
    let mut event = message("jane@chat.example", text);
    event.sender.groups = vec!["traders".into()];
    event
}

#[test]
fn clean_message_is_allowed_with_the_disclaimer() {
    let policy = compile(STRICT);
    let verdict = policy.evaluate(&trader("hello there"), &mut PolicyState::default());
    assert_eq!(verdict.action, Action::Allow);
    assert!(verdict.matches.is_empty());
    assert_eq!(
        verdict.disclaimer.as_ref().map(|d| &*d.text),
        Some("Messages are recorded.")
    );
}

#[test]
fn keyword_block_names_the_rule_and_notifies() {
    let policy = compile(STRICT);
    let verdict = policy.evaluate(
        &trader("any news on Project Falcon?"),
        &mut PolicyState::default(),
    );
    assert_eq!(verdict.action, Action::Block);
    assert_eq!(names(&verdict), ["strict/deals"]);
    assert_eq!(verdict.notices, ["Blocked by policy strict/deals"]);
    assert_eq!(verdict.matches[0].spans, [Span { start: 12, end: 26 }]);
}

#[test]
fn evasions_do_not_slip_through() {
    let policy = compile(STRICT);
    for text in [
        "ｐｒｏｊｅｃｔ ｆａｌｃｏｎ",
        "pro\u{200B}ject fal\u{200C}con",
        "prоject fаlcon",
        "PROJECT   FALCON",
        "próject fálcon",
    ] {
        let verdict = policy.evaluate(&trader(text), &mut PolicyState::default());
        assert_eq!(verdict.action, Action::Block, "{text:?}");
    }
    let verdict = policy.evaluate(&trader("project falconry"), &mut PolicyState::default());
    assert_eq!(verdict.action, Action::Allow, "whole words only");
}

#[test]
fn formatting_codes_do_not_hide_words_from_rules() {
    let policy = compile(
        r#"
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: strict, namespace: acme}
spec:
  tenantRef: acme
  content:
    - {name: cards, match: {detector: credit-card}, action: redact}
    - {name: deals, match: {keywords: ["project falcon"]}, action: block}
    - {name: wires, match: {regex: "(?i)wire\\s+\\d+k"}, action: alert}
"#,
    );
    let irc = |text: &str| {
        let mut event = message("jane", text);
        event.protocol = Protocol::Irc;
        event
    };
    for text in [
        "project \x02falcon\x02",
        "\x0304,12pro\x03ject \x1dfal\x1fcon\x0f",
        "\x04FF0000project\x04 falcon",
        "pro\x16ject fal\x11con",
    ] {
        let verdict = policy.evaluate(&irc(text), &mut PolicyState::default());
        assert_eq!(verdict.action, Action::Block, "{text:?}");
        assert_eq!(names(&verdict), ["strict/deals"], "{text:?}");
    }
    // Detectors and patterns see the visible text too, and redact the original on the
    // original's offsets, formatting included.
    let text = "card 4111\x02 1111 \x0312,011111\x03 1111 thanks";
    let verdict = policy.evaluate(&irc(text), &mut PolicyState::default());
    assert_eq!(verdict.action, Action::Redact, "{text:?}");
    assert_eq!(
        verdict.delivered(text),
        "card ███████████████████████████ thanks"
    );
    let text = "wire 500\u{200B}k today";
    let verdict = policy.evaluate(&message("jane", text), &mut PolicyState::default());
    assert_eq!(names(&verdict), ["strict/wires"], "{text:?}");
}

#[test]
fn redaction_masks_only_the_card() {
    let policy = compile(STRICT);
    let text = "card 4111 1111 1111 1111 thanks";
    let verdict = policy.evaluate(&trader(text), &mut PolicyState::default());
    assert_eq!(verdict.action, Action::Redact);
    assert_eq!(names(&verdict), ["strict/cards"]);
    assert_eq!(verdict.delivered(text), "card ███████████████████ thanks");
}

#[test]
fn most_severe_action_wins_and_every_rule_is_named() {
    let policy = compile(STRICT);
    let verdict = policy.evaluate(
        &trader("card 4111111111111111 for project falcon, ssn 536-22-1234"),
        &mut PolicyState::default(),
    );
    assert_eq!(verdict.action, Action::Block);
    let mut rules = names(&verdict);
    rules.sort_unstable();
    assert_eq!(rules, ["baseline/ssn", "strict/cards", "strict/deals"]);
    assert!(
        verdict.redactions.is_empty(),
        "nothing to redact in a blocked message"
    );
}

#[test]
fn subjects_limit_where_a_policy_applies() {
    let policy = compile(STRICT);
    let outsider = message("joe@chat.example", "project falcon 4111111111111111");
    let verdict = policy.evaluate(&outsider, &mut PolicyState::default());
    assert_eq!(
        verdict.action,
        Action::Allow,
        "strict applies to traders only: {verdict:?}"
    );
    assert_eq!(verdict.disclaimer, None);
}

#[test]
fn monitor_mode_records_and_changes_nothing() {
    let policy = compile(STRICT);
    let mut state = PolicyState::default();
    let event = trader("key AKIAIOSFODNN7EXAMPLE and the rumour");
    let verdict = policy.evaluate(&event, &mut state);
    assert_eq!(verdict.action, Action::Allow);
    assert_eq!(verdict.monitor, Action::Quarantine);
    let mut rules = names(&verdict);
    rules.sort_unstable();
    assert_eq!(rules, ["discovery/gossip", "discovery/secrets"]);
    assert!(verdict.alerts.iter().all(|a| a.monitor));
    assert!(verdict.notices.is_empty());
    let next = policy.evaluate(&trader("hello"), &mut state);
    assert_eq!(next.action, Action::Allow, "monitor never quarantines");
}

#[test]
fn directions_restrict_rules() {
    let policy = compile(STRICT);
    let verdict = policy.evaluate(&trader("wire 50k today"), &mut PolicyState::default());
    assert_eq!(names(&verdict), ["strict/wires"]);
    assert_eq!(verdict.action, Action::Allow, "alert only");
    assert_eq!(verdict.alerts.len(), 1);
    let mut inbound = trader("wire 50k today");
    inbound.direction = Direction::Inbound;
    assert!(
        policy
            .evaluate(&inbound, &mut PolicyState::default())
            .matches
            .is_empty()
    );
}

#[test]
fn protocol_precedence_follows_priority() {
    let policy = compile(STRICT);
    let mut irc = trader("hi");
    irc.protocol = Protocol::Irc;
    let verdict = policy.evaluate(&irc, &mut PolicyState::default());
    assert_eq!(
        (verdict.action, names(&verdict)),
        (Action::Block, vec!["strict/protocols"]),
        "strict (100) blocks irc over baseline (10)"
    );
    let mut outsider_irc = message("joe@chat.example", "hi");
    outsider_irc.protocol = Protocol::Irc;
    assert_eq!(
        policy
            .evaluate(&outsider_irc, &mut PolicyState::default())
            .action,
        Action::Allow,
        "baseline allows irc"
    );
    let mut sip = message("joe@chat.example", "hi");
    sip.protocol = Protocol::Sip;
    let verdict = policy.evaluate(&sip, &mut PolicyState::default());
    assert_eq!(
        (verdict.action, names(&verdict)),
        (Action::Block, vec!["baseline/protocols"]),
        "baseline's default"
    );
}

#[test]
fn services_features_and_tls() {
    let policy = compile(STRICT);
    let mut session = trader("");
    session.content = Content::Session;
    session.protocol = Protocol::Tls;
    session.service = Some("whatsapp".into());
    let verdict = policy.evaluate(&session, &mut PolicyState::default());
    assert_eq!(verdict.action, Action::Block);
    assert!(names(&verdict).contains(&"strict/services"));
    session.service = None;
    session.protocol = Protocol::Xmpp;
    let verdict = policy.evaluate(&session, &mut PolicyState::default());
    assert_eq!(
        (verdict.action, verdict.tls),
        (Action::Allow, Some(TlsMode::Intercept))
    );
    let mut call = trader("");
    call.content = Content::Feature(Feature::Voice);
    assert_eq!(
        names(&policy.evaluate(&call, &mut PolicyState::default())),
        ["strict/features"]
    );
}

#[test]
fn file_transfer_rules() {
    let policy = compile(STRICT);
    let offer = |name: &str, size: u64| {
        let mut event = trader("");
        event.content = Content::File(FileOffer {
            name: name.into(),
            size: Some(size),
            sha256: None,
        });
        event
    };
    let ok = policy.evaluate(&offer("report.pdf", 1000), &mut PolicyState::default());
    assert_eq!((ok.action, ok.scan), (Action::Allow, true));
    let big = policy.evaluate(&offer("report.pdf", 2 << 20), &mut PolicyState::default());
    assert_eq!((big.action, big.scan), (Action::Block, false));
    assert_eq!(big.notices, ["file refused by strict/file-transfer"]);
    let exe = policy.evaluate(&offer("setup.EXE", 10), &mut PolicyState::default());
    assert!(exe.matches[0].reason.contains(".exe"), "{exe:?}");
}

#[test]
fn urls_are_blocked_by_domain_with_exceptions() {
    let policy = compile(STRICT);
    let verdict = policy.evaluate(
        &trader("look https://x.bad.example/p"),
        &mut PolicyState::default(),
    );
    assert_eq!(
        (verdict.action, names(&verdict)),
        (Action::Block, vec!["strict/urls"])
    );
    let verdict = policy.evaluate(
        &trader("look https://ok.bad.example/p"),
        &mut PolicyState::default(),
    );
    assert_eq!(verdict.action, Action::Allow);
    let mut oob = trader("see attachment");
    oob.urls = vec!["https://files.bad.example/x".into()];
    assert_eq!(
        policy.evaluate(&oob, &mut PolicyState::default()).action,
        Action::Block
    );
}

#[test]
fn rate_limit_blocks_the_excess() {
    let policy = compile(STRICT);
    let mut state = PolicyState::default();
    let actions: Vec<Action> = (0..5)
        .map(|_| {
            policy
                .evaluate(&message("joe@chat.example", "hi"), &mut state)
                .action
        })
        .collect();
    assert_eq!(
        actions,
        [
            Action::Allow,
            Action::Allow,
            Action::Allow,
            Action::Block,
            Action::Block
        ]
    );
    let mut later = message("joe@chat.example", "hi");
    later.at_ms += 20_000;
    assert_eq!(
        policy.evaluate(&later, &mut state).action,
        Action::Allow,
        "refilled after 20 s"
    );
}

#[test]
fn worm_fan_out_quarantines_the_sender() {
    let policy = compile(STRICT);
    let mut state = PolicyState::default();
    let mut verdicts = Vec::new();
    for (i, friend) in ["a", "b", "c"].iter().enumerate() {
        let mut event = trader("check http://fun.example/pics");
        event.recipients = vec![format!("{friend}@chat.example")];
        event.at_ms += i as u64 * 1000;
        verdicts.push(policy.evaluate(&event, &mut state));
    }
    assert_eq!(verdicts[1].action, Action::Allow);
    assert_eq!(
        (verdicts[2].action, names(&verdicts[2])),
        (Action::Quarantine, vec!["strict/worm"])
    );
    let mut after = trader("sorry, that was not me");
    after.at_ms += 60_000;
    let verdict = policy.evaluate(&after, &mut state);
    assert_eq!(verdict.action, Action::Block);
    assert!(
        verdict.matches[0]
            .reason
            .contains("quarantined by strict/worm"),
        "{verdict:?}"
    );
    after.at_ms += 10 * 60_000;
    assert_eq!(
        policy.evaluate(&after, &mut state).action,
        Action::Allow,
        "quarantine ended"
    );
}

#[test]
fn compile_errors_name_policy_and_field() {
    let broken = r#"
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: broken, namespace: acme}
spec:
  tenantRef: acme
  content:
    - {name: bad-regex, match: {regex: "(unclosed"}, action: block}
    - {name: never, match: {regex: "[^\\s\\S]"}, action: block}
    - {name: invisible, match: {keywords: ["ok", "\u200b"]}, action: block}
    - {name: urls, match: {keywords: [x]}, action: block}
  rateLimit: {messages: 1, per: 0s}
"#;
    let error = CompiledPolicy::compile("acme", &policies(broken)).expect_err("must fail");
    let found: Vec<(String, String)> = error
        .0
        .iter()
        .map(|d| (d.policy.clone(), d.path.clone()))
        .collect();
    let expected = [
        "spec.rateLimit.per",
        "spec.content[0].match.regex",
        "spec.content[1].match.regex",
        "spec.content[2].match.keywords[1]",
        "spec.content[3].name",
    ];
    for path in expected {
        assert!(
            found.contains(&("acme/broken".to_owned(), path.to_owned())),
            "{path} missing from {found:?}"
        );
    }
    assert!(
        error.0.iter().any(|d| d.message.contains("never match")),
        "{error:?}"
    );
}

#[test]
fn other_tenants_policies_are_ignored_and_ties_are_ordered_by_name() {
    let yaml = r#"
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: zeta, namespace: acme}
spec: {tenantRef: acme, protocols: {allow: [irc]}}
---
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: alpha, namespace: acme}
spec: {tenantRef: acme, protocols: {block: [irc]}}
---
apiVersion: imgate.io/v1alpha1
kind: IMPolicy
metadata: {name: other, namespace: globex}
spec: {tenantRef: globex, protocols: {block: [xmpp]}}
"#;
    let policy = compile(yaml);
    assert_eq!(policy.policy_names().collect::<Vec<_>>(), ["alpha", "zeta"]);
    let mut irc = message("x", "hi");
    irc.protocol = Protocol::Irc;
    assert_eq!(
        policy.evaluate(&irc, &mut PolicyState::default()).action,
        Action::Block,
        "alpha precedes zeta"
    );
}

#[test]
fn compiled_policy_is_shareable() {
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<CompiledPolicy>();
}

proptest! {
    #[test]
    fn evaluation_never_panics_and_spans_are_valid(text in "\\PC{0,200}") {
        let policy = compile(STRICT);
        let verdict = policy.evaluate(&trader(&text), &mut PolicyState::default());
        for rule in &verdict.matches {
            for span in &rule.spans {
                prop_assert!(span.start < span.end && span.end <= text.len());
                prop_assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
            }
        }
        prop_assert!(verdict.redactions.windows(2).all(|w| w[0].end < w[1].start));
        let delivered = verdict.delivered(&text);
        prop_assert_eq!(delivered.chars().count(), text.chars().count());
    }

    #[test]
    fn monitor_policies_never_change_the_action(text in "(project falcon|rumour|AKIAIOSFODNN7EXAMPLE|hello| )*") {
        let monitor_only = STRICT.split("---").nth(2).expect("third document");
        let policy = compile(monitor_only);
        let verdict = policy.evaluate(&trader(&text), &mut PolicyState::default());
        prop_assert_eq!(verdict.action, Action::Allow);
        prop_assert!(verdict.redactions.is_empty() && verdict.notices.is_empty());
    }
}
