//! `imgate policy explain`: one message through a policy set, with every rule that matched,
//! where it matched, and why the verdict is what it is.

use std::fmt::Write as _;
use std::path::PathBuf;

use imgate_crds::policy::{DisclaimerFrequency, PolicyMode};
use imgate_dataplane::inspect::event::Event;
use imgate_dataplane::inspect::policy::{Action, CompiledPolicy, PolicyState, Verdict};

use super::event_spec::{DEFAULT_START_MS, EventSpec};
use super::lint::{Level, Workspace};

/// What to explain.
pub struct Request {
    /// Policy files or folders.
    pub paths: Vec<PathBuf>,
    /// The tenant, when the policies are for several.
    pub tenant: Option<String>,
    /// The event.
    pub event: EventSpec,
    /// Print the verdict as JSON instead of prose.
    pub json: bool,
}

/// Runs `explain`; the exit code is 1 when the policies do not lint.
pub fn run(request: Request) -> anyhow::Result<i32> {
    let workspace = Workspace::load(&request.paths);
    if workspace.count(Level::Error) > 0 {
        workspace.report(&mut std::io::stdout().lock())?;
        return Ok(1);
    }
    let (tenant, policy) = workspace
        .policy_for(request.tenant.as_deref())
        .map_err(|e| anyhow::anyhow!("{e} (use --tenant)"))?;
    let event = request.event.to_event(tenant, DEFAULT_START_MS)?;
    let verdict = policy.evaluate(&event, &mut PolicyState::default());
    if request.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", explain(policy, &event, &verdict));
    }
    Ok(0)
}

/// The explanation as text.
pub fn explain(policy: &CompiledPolicy, event: &Event, verdict: &Verdict) -> String {
    let mut out = String::new();
    let mode = |m: PolicyMode| {
        if m == PolicyMode::Monitor {
            "monitor"
        } else {
            "enforce"
        }
    };
    let order: Vec<String> = policy
        .policy_summaries()
        .map(|(name, priority, m)| format!("{name} (priority {priority}, {})", mode(m)))
        .collect();
    let _ = writeln!(
        out,
        "Tenant {}: policies in precedence order: {}",
        policy.tenant(),
        order.join(", ")
    );
    let applicable = policy.applicable_to(&event.sender);
    let who = event
        .sender
        .person
        .as_deref()
        .map_or(event.sender.handle.clone(), |p| {
            format!("{} ({p})", event.sender.handle)
        });
    let applies = if applicable.is_empty() {
        "none".to_owned()
    } else {
        applicable.join(", ")
    };
    let _ = writeln!(out, "Sender {who}: applicable policies: {applies}");
    let text = event.text().unwrap_or_default();
    if !text.is_empty() {
        let _ = writeln!(out, "Message: {text}");
    }
    if verdict.matches.is_empty() {
        let _ = writeln!(out, "No rule matched.");
    }
    for rule in &verdict.matches {
        let _ = writeln!(
            out,
            "  {} [{}] asks {}: {}",
            rule.rule,
            mode(rule.mode),
            rule.action.as_str(),
            rule.reason
        );
        for span in &rule.spans {
            let before = text[..span.start].chars().count();
            let width = text[span.start..span.end].chars().count().max(1);
            let _ = writeln!(
                out,
                "         {}{} {:?} at bytes {}..{}",
                " ".repeat(before),
                "^".repeat(width),
                &text[span.start..span.end],
                span.start,
                span.end
            );
        }
    }
    let deciding: Vec<&str> = verdict
        .matches
        .iter()
        .filter(|m| {
            m.mode == PolicyMode::Enforce && m.action == verdict.action && m.action != Action::Allow
        })
        .map(|m| &*m.rule)
        .collect();
    let why = if deciding.is_empty() {
        "no enforce-mode rule asks for more than allow".to_owned()
    } else {
        format!("the most severe action, asked by {}", deciding.join(", "))
    };
    let _ = writeln!(
        out,
        "Verdict: {} ({why})",
        verdict.action.as_str().to_uppercase()
    );
    if verdict.monitor != Action::Allow {
        let _ = writeln!(
            out,
            "Monitor-mode policies would have: {} (nothing was changed for them)",
            verdict.monitor.as_str()
        );
    }
    match verdict.action {
        Action::Allow | Action::Redact if !text.is_empty() => {
            let _ = writeln!(out, "Delivered: {}", verdict.delivered(text));
        }
        Action::Block | Action::Quarantine => {
            let _ = writeln!(out, "Delivered: nothing");
        }
        _ => {}
    }
    for notice in &verdict.notices {
        let _ = writeln!(out, "Notice to sender: {notice}");
    }
    if let Some(disclaimer) = &verdict.disclaimer {
        let once = match disclaimer.once {
            DisclaimerFrequency::PerConversation => "once per conversation",
            DisclaimerFrequency::PerSession => "once per session",
        };
        let _ = writeln!(out, "Disclaimer ({once}): {}", disclaimer.text);
    }
    if let Some(tls) = verdict.tls {
        let _ = writeln!(out, "TLS: {tls:?}");
    }
    if verdict.scan {
        let _ = writeln!(out, "The file is scanned for malware before delivery.");
    }
    out
}
