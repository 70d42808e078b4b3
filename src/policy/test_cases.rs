//! `imgate policy test POLICY_DIR CASES...`: YAML test cases run against the compiled
//! policies, with a readable report, a non-zero exit on failure and optional JUnit XML.
//!
//! A case file:
//! ```yaml
//! tenant: acme                 # optional when the policies are for one tenant
//! defaults: {sender: {handle: jane@chat.example, groups: [traders]}}
//! cases:
//!   - name: card numbers are redacted
//!     event: {text: "card 4111 1111 1111 1111"}
//!     expect: {action: redact, rules: [strict/cards]}
//!   - name: a worm is contained          # several events share the sender state;
//!     events: [{text: "http://x.example", recipients: [a]}, ...]   # expect is about the last
//!     expect: {action: quarantine}
//! ```
//!
//! Invariants: each case starts from fresh sender state; `rules` and `notices` compare as
//! sets; a case file that does not parse, or a case with neither `event` nor `events`, is a
//! failure, never a skip.

use std::path::{Path, PathBuf};

use imgate_crds::policy::TlsMode;
use imgate_dataplane::inspect::policy::{Action, CompiledPolicy, PolicyState, Verdict};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Deserialize;

use super::event_spec::{DEFAULT_START_MS, DEFAULT_STEP_MS, EventSpec};
use super::lint::{Level, Workspace};
use crate::manifest;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    tenant: Option<String>,
    #[serde(default)]
    defaults: EventSpec,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    event: Option<EventSpec>,
    #[serde(default)]
    events: Vec<EventSpec>,
    expect: Expect,
}

/// What a case expects; only the fields given are compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    action: Option<Action>,
    monitor: Option<Action>,
    rules: Option<Vec<String>>,
    delivered: Option<String>,
    notices: Option<Vec<String>>,
    disclaimer: Option<String>,
    tls: Option<TlsMode>,
    scan: Option<bool>,
}

/// The outcome of one case.
struct Outcome {
    file: PathBuf,
    line: u64,
    name: String,
    failures: Vec<String>,
}

/// Runs the cases; the exit code is 1 when any case fails or the policies do not lint.
pub fn run(policy_dir: &Path, case_paths: &[PathBuf], junit: Option<&Path>) -> anyhow::Result<i32> {
    let workspace = Workspace::load(&[policy_dir.to_owned()]);
    if workspace.count(Level::Error) > 0 || workspace.compiled.is_empty() {
        workspace.report(&mut std::io::stdout().lock())?;
        println!(
            "the policies in {} must lint clean before they can be tested",
            policy_dir.display()
        );
        return Ok(1);
    }
    let mut outcomes = Vec::new();
    for file in manifest::collect_files(case_paths)? {
        outcomes.extend(run_file(&workspace, &file));
    }
    let failed = outcomes.iter().filter(|o| !o.failures.is_empty()).count();
    for outcome in &outcomes {
        let status = if outcome.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "{status}  {}:{}  {}",
            outcome.file.display(),
            outcome.line,
            outcome.name
        );
        for failure in &outcome.failures {
            println!("        {failure}");
        }
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    if let Some(path) = junit {
        std::fs::write(path, junit_xml(&outcomes)?)?;
    }
    Ok(i32::from(failed > 0 || outcomes.is_empty()))
}

fn run_file(workspace: &Workspace, file: &Path) -> Vec<Outcome> {
    let broken = |line: u64, message: String| {
        vec![Outcome {
            file: file.to_owned(),
            line,
            name: "(case file)".into(),
            failures: vec![message],
        }]
    };
    let documents = match manifest::load_file(file) {
        Ok(documents) => documents,
        Err(error) => return broken(error.line.unwrap_or(1), error.message),
    };
    let mut outcomes = Vec::new();
    for document in documents {
        let cases: CaseFile = match serde_json::from_value(document.value.clone()) {
            Ok(cases) => cases,
            Err(error) => {
                outcomes.extend(broken(
                    document.start_line(),
                    format!("not a test case file: {error}"),
                ));
                continue;
            }
        };
        let (tenant, policy) = match workspace.policy_for(cases.tenant.as_deref()) {
            Ok(found) => found,
            Err(error) => {
                outcomes.extend(broken(
                    document.line_of("tenant"),
                    format!("{error} with `tenant:`"),
                ));
                continue;
            }
        };
        for (index, case) in cases.cases.iter().enumerate() {
            let failures = run_case(policy, tenant, &cases.defaults, case);
            outcomes.push(Outcome {
                file: file.to_owned(),
                line: document.line_of(&format!("cases[{index}]")),
                name: case.name.clone(),
                failures,
            });
        }
    }
    outcomes
}

fn run_case(
    policy: &CompiledPolicy,
    tenant: &str,
    defaults: &EventSpec,
    case: &Case,
) -> Vec<String> {
    let specs: Vec<&EventSpec> = case.event.iter().chain(&case.events).collect();
    if specs.is_empty() {
        return vec!["the case has neither `event` nor `events`".into()];
    }
    let mut state = PolicyState::default();
    let mut last = None;
    for (step, spec) in specs.into_iter().enumerate() {
        let at = DEFAULT_START_MS + step as u64 * DEFAULT_STEP_MS;
        match spec.clone().or(defaults).to_event(tenant, at) {
            Ok(event) => {
                let verdict = policy.evaluate(&event, &mut state);
                last = Some((event, verdict));
            }
            Err(error) => return vec![format!("event {}: {error}", step + 1)],
        }
    }
    let Some((event, verdict)) = last else {
        return Vec::new();
    };
    compare(&case.expect, event.text().unwrap_or_default(), &verdict)
}

fn compare(expect: &Expect, text: &str, verdict: &Verdict) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |field: &str, expected: String, actual: String| {
        if expected != actual {
            failures.push(format!("{field}: expected {expected}, got {actual}"));
        }
    };
    if let Some(action) = expect.action {
        check(
            "action",
            action.as_str().into(),
            verdict.action.as_str().into(),
        );
    }
    if let Some(monitor) = expect.monitor {
        check(
            "monitor",
            monitor.as_str().into(),
            verdict.monitor.as_str().into(),
        );
    }
    if let Some(rules) = &expect.rules {
        check(
            "rules",
            sorted(rules.iter().map(String::as_str)),
            sorted(verdict.rule_names()),
        );
    }
    if let Some(delivered) = &expect.delivered {
        check(
            "delivered",
            format!("{delivered:?}"),
            format!("{:?}", verdict.delivered(text)),
        );
    }
    if let Some(notices) = &expect.notices {
        check(
            "notices",
            sorted(notices.iter().map(String::as_str)),
            sorted(verdict.notices.iter().map(String::as_str)),
        );
    }
    if let Some(disclaimer) = &expect.disclaimer {
        check(
            "disclaimer",
            format!("{disclaimer:?}"),
            format!("{:?}", verdict.disclaimer.as_ref().map_or("", |d| &*d.text)),
        );
    }
    if let Some(tls) = expect.tls {
        check("tls", name_of(&Some(tls)), name_of(&verdict.tls));
    }
    if let Some(scan) = expect.scan {
        check("scan", scan.to_string(), verdict.scan.to_string());
    }
    failures
}

/// The manifest name of a value (`intercept`), or `none`.
fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "none".into(),
    }
}

fn sorted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut items: Vec<&str> = items.collect();
    items.sort_unstable();
    items.dedup();
    format!("[{}]", items.join(", "))
}

fn junit_xml(outcomes: &[Outcome]) -> anyhow::Result<String> {
    let mut report = Report::new("imgate policy test");
    let mut suites: Vec<TestSuite> = Vec::new();
    for outcome in outcomes {
        let suite_name = outcome.file.display().to_string();
        if suites.last().is_none_or(|s| s.name.as_str() != suite_name) {
            suites.push(TestSuite::new(suite_name.clone()));
        }
        let status = if outcome.failures.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(outcome.failures.join("; "));
            status.set_description(outcome.failures.join("\n"));
            status
        };
        let mut case = TestCase::new(outcome.name.clone(), status);
        case.set_classname(format!("{}:{}", suite_name, outcome.line));
        if let Some(suite) = suites.last_mut() {
            suite.add_test_case(case);
        }
    }
    report.add_test_suites(suites);
    Ok(report.to_string()?)
}
