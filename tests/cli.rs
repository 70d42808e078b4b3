//! The `imgate` binary as users run it: lint, test, explain and crds, on the shipped examples
//! and on deliberately broken policies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn imgate(args: &[&str]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("imgate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

fn assert_line(output: &str, needle: &str) {
    assert!(
        output.lines().any(|l| l.contains(needle)),
        "no line contains {needle:?} in:\n{output}"
    );
}

#[test]
fn the_examples_lint_clean() {
    let (code, output) = imgate(&["policy", "lint", "--strict", "examples"]);
    assert_eq!(code, 0, "{output}");
    assert_line(
        &output,
        "13 file(s), 3 tenant(s), 4 polic(ies), 6 other document(s) skipped: 0 error(s), 0 warning(s)",
    );
}

#[test]
fn the_example_test_cases_pass() {
    for (policies, cases) in [("broker-dealer", 22), ("small-firm", 7), ("discovery", 5)] {
        let case_file = format!("examples/tests/{policies}.yaml");
        let (code, output) = imgate(&[
            "policy",
            "test",
            &format!("examples/{policies}"),
            &case_file,
        ]);
        assert_eq!(code, 0, "{output}");
        assert_line(&output, &format!("{cases} passed, 0 failed"));
    }
}

#[test]
fn an_invalid_regex_names_file_line_and_field() {
    let (code, output) = imgate(&["policy", "lint", "tests/fixtures/broken/invalid-regex.yaml"]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "tests/fixtures/broken/invalid-regex.yaml:11: error: IMPolicy bad-regex: spec.content[0].match.regex: invalid regular expression",
    );
}

#[test]
fn an_unknown_protocol_is_refused_with_the_supported_values() {
    let (code, output) = imgate(&[
        "policy",
        "lint",
        "tests/fixtures/broken/unknown-protocol.yaml",
    ]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "unknown-protocol.yaml:11: error: IMPolicy bad-protocol: spec.protocols.allow[1]: unsupported value \"skype\": supported values are \"xmpp\"",
    );
}

#[test]
fn rules_that_can_never_match_are_errors() {
    let (code, output) = imgate(&["policy", "lint", "tests/fixtures/broken/never-matches.yaml"]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "never-matches.yaml:10: error: IMPolicy never: spec.content[0].match.regex: the regular expression can never match anything",
    );
    assert_line(
        &output,
        "never-matches.yaml:15: error: IMPolicy never: spec.content[1].match.keywords[0]: keyword",
    );
    assert_line(&output, "can never match");
}

#[test]
fn typos_cel_rules_ranges_and_enums_are_reported() {
    let (code, output) = imgate(&["policy", "lint", "tests/fixtures/broken/typo-and-cel.yaml"]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "typo-and-cel.yaml:13: error: IMPolicy typos: spec.content[1].match.wholeword: unknown field (did you mean \"wholeWord\"?)",
    );
    assert_line(
        &output,
        "typo-and-cel.yaml:25: error: Tenant acme: spec.archive.retention.days: should be greater than or equal to 1",
    );
    assert_line(
        &output,
        "typo-and-cel.yaml:25: error: Tenant acme: spec.archive.retention.mode: unsupported value \"forever\"",
    );
    let (_, only_policy) = imgate(&["policy", "lint", "tests/fixtures/broken/typo-and-cel.yaml"]);
    assert!(
        only_policy.contains("2 error(s)") || only_policy.contains("3 error(s)"),
        "{only_policy}"
    );
}

#[test]
fn cel_rules_are_checked_once_the_schema_holds() {
    let dir = tempdir("cel");
    std::fs::write(
        dir.join("p.yaml"),
        "apiVersion: imgate.io/v1alpha1\nkind: IMPolicy\nmetadata: {name: p, namespace: acme}\nspec:\n  tenantRef: acme\n  content:\n    - name: both\n      match: {keywords: [falcon], regex: heron}\n      action: block\n",
    )
    .expect("write");
    let (code, output) = imgate(&["policy", "lint", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "p.yaml:8: error: IMPolicy p: spec.content[0].match: a match needs exactly one of keywords, regex or detector",
    );
}

#[test]
fn a_network_the_dataplane_cannot_read_is_named() {
    let dir = tempdir("networks");
    std::fs::write(
        dir.join("t.yaml"),
        "apiVersion: imgate.io/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  archive:\n    s3: {bucket: acme-archive, region: eu-west-2}\n    retention: {days: 30}\n  destinations:\n    allowNetworks:\n      - 10.20.0.0/16\n      - 10.20.0.0/1\n    allowDomains: [chat.example, 10.0.0.1]\n    deny: [games.example, -bad.example]\n    ports: ['5222', 6000-5000]\n",
    )
    .expect("write");
    let (code, output) = imgate(&["policy", "lint", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("error: Tenant acme: spec.destinations.allowNetworks[1]: \"10.20.0.0/1\": the address has bits set beyond its /1 prefix"),
        "{output}"
    );
    assert!(!output.contains("allowNetworks[0]"), "{output}");
    assert!(
        output.contains(
            "error: Tenant acme: spec.destinations.deny[1]: \"-bad.example\": not a network"
        ),
        "{output}"
    );
    assert!(
        output.contains("error: Tenant acme: spec.destinations.ports[1]: \"6000-5000\": a range goes from its lower port up"),
        "{output}"
    );
    assert!(
        output.contains("error: Tenant acme: spec.destinations.allowDomains[1]: \"10.0.0.1\" is an address: allow it in allowNetworks"),
        "{output}"
    );
    assert!(
        !output.contains("deny[0]")
            && !output.contains("ports[0]")
            && !output.contains("allowDomains[0]"),
        "{output}"
    );
}

#[test]
fn broken_yaml_is_reported_with_its_line() {
    let (code, output) = imgate(&["policy", "lint", "tests/fixtures/broken/not-yaml.yaml"]);
    assert_eq!(code, 1, "{output}");
    assert_line(&output, "tests/fixtures/broken/not-yaml.yaml:");
    assert_line(&output, "error: file: not valid YAML");
}

#[test]
fn a_missing_path_is_reported() {
    let (code, output) = imgate(&["policy", "lint", "no/such/dir"]);
    assert_eq!(code, 1, "{output}");
    assert_line(&output, "no/such/dir:0: error: input: cannot read");
}

#[test]
fn failing_cases_fail_the_run_and_write_junit() {
    let dir = tempdir("junit");
    let junit = dir.join("report.xml");
    let (code, output) = imgate(&[
        "policy",
        "test",
        "examples/broker-dealer",
        "tests/fixtures/cases/failing.yaml",
        "--junit",
        junit.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "FAIL  tests/fixtures/cases/failing.yaml:3  this expectation is wrong on purpose",
    );
    assert_line(&output, "action: expected allow, got redact");
    assert_line(&output, "rules: expected [], got [firm-wide/card-numbers]");
    assert_line(
        &output,
        "PASS  tests/fixtures/cases/failing.yaml:6  this one holds",
    );
    assert_line(&output, "1 passed, 1 failed");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("tests=\"2\"") && xml.contains("failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure") && xml.contains("this expectation is wrong on purpose"),
        "{xml}"
    );
}

#[test]
fn broken_policies_cannot_be_tested() {
    let (code, output) = imgate(&[
        "policy",
        "test",
        "tests/fixtures/broken/invalid-regex.yaml",
        "examples/tests/small-firm.yaml",
    ]);
    assert_eq!(code, 1, "{output}");
    assert_line(&output, "must lint clean before they can be tested");
}

#[test]
fn explain_shows_rules_spans_and_the_deciding_rule() {
    let (code, output) = imgate(&[
        "policy",
        "explain",
        "examples/broker-dealer",
        "--group",
        "traders",
        "--handle",
        "surferdood124@chat.example",
        "-m",
        "card 4111111111111111 re project falcon",
    ]);
    assert_eq!(code, 0, "{output}");
    assert_line(
        &output,
        "policies in precedence order: trading-desk (priority 200, enforce), firm-wide (priority 100, enforce)",
    );
    assert_line(&output, "trading-desk/deal-names [enforce] asks block");
    assert_line(&output, "firm-wide/card-numbers [enforce] asks redact");
    assert_line(
        &output,
        "^^^^^^^^^^^^^^^^ \"4111111111111111\" at bytes 5..21",
    );
    assert_line(
        &output,
        "Verdict: BLOCK (the most severe action, asked by trading-desk/deal-names)",
    );

    let (code, json) = imgate(&[
        "policy",
        "explain",
        "examples/small-firm",
        "--json",
        "-m",
        "ssn 536-22-1234",
    ]);
    assert_eq!(code, 0, "{json}");
    let verdict: serde_json::Value = serde_json::from_str(&json).expect("JSON verdict");
    assert_eq!(verdict["action"], "redact");
    assert_eq!(
        verdict["redactions"][0],
        serde_json::json!({"start": 4, "end": 15})
    );
}

#[test]
fn explain_needs_a_tenant_when_policies_name_several() {
    let (code, output) = imgate(&["policy", "explain", "examples", "-m", "hi"]);
    assert_eq!(code, 2, "{output}");
    assert_line(
        &output,
        "the policies are for several tenants (harbor-dental, meridian-capital, northwind-advisors): name one (use --tenant)",
    );
}

#[test]
fn crds_prints_what_is_checked_in() {
    let (code, output) = imgate(&["crds"]);
    assert_eq!(code, 0);
    for file in [
        "crds/tenants.imgate.io.yaml",
        "crds/impolicies.imgate.io.yaml",
    ] {
        let checked_in = std::fs::read_to_string(root().join(file)).expect("CRD file");
        assert!(
            output.contains(&checked_in),
            "{file} differs from `imgate crds`"
        );
    }
}

#[test]
fn up_refuses_settings_it_cannot_honour_before_it_starts() {
    let dir = tempdir("up-refusals");
    let data = dir.join("data");
    let identity = dir.join("identity.yaml");
    std::fs::write(&identity, "ldap: {url: 42}\n").expect("write");
    let identity = identity.to_str().expect("path");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--s3-bucket", "b", "--s3-encryption", "kms"],
            "error: --s3-encryption kms needs --s3-kms-key KEY",
        ),
        (
            &["--s3-bucket", "b", "--s3-kms-key", "alias/k"],
            "error: --s3-kms-key goes with --s3-encryption kms",
        ),
        (&["--identity", identity], "is not a Tenant's spec.identity"),
    ];
    for (options, refusal) in cases {
        let mut args = vec!["up", "--data", data.to_str().expect("path")];
        args.extend(options);
        let (code, output) = imgate(&args);
        assert_eq!(code, 2, "{output}");
        assert_line(&output, refusal);
    }
    assert!(
        !data.exists(),
        "nothing is opened before the settings are known to be good"
    );
}

#[test]
fn up_says_what_the_cluster_options_need_outside_a_cluster() {
    let dir = tempdir("cluster-options");
    let data = dir.join("data");
    for (option, name) in [
        ("--enrollment-secret", "connector-enrollment"),
        ("--policy-config-map", "policy"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args(["up", "--socks", "off", "--http", "off", "--metrics", "off"])
            .args(["--tunnel", "127.0.0.1:0", option, name])
            .arg("--data")
            .arg(&data)
            .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("imgate runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_line(
            &stderr,
            &format!(
                "error: {option} {name} needs the Kubernetes API (run in a pod with its service account token, or set KUBECONFIG)"
            ),
        );
    }
    assert!(!data.exists(), "nothing is opened without the API");
}

fn tempdir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn the_operator_will_not_run_without_the_api_servers_range() {
    let (code, output) = imgate(&["operator", "run", "--metrics", "127.0.0.1:0"]);
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("--api-server-cidr is required")
            && output.contains("kubectl get endpointslices"),
        "{output}"
    );
}

#[test]
fn invalid_alerts_are_refused_with_file_line_and_field() {
    let dir = tempdir("alerts");
    std::fs::write(
        dir.join("t.yaml"),
        "apiVersion: imgate.io/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  archive:\n    s3: {bucket: acme-archive, region: eu-west-2}\n    retention: {days: 30}\n  alerts:\n    receivers:\n      - name: meta\n        webhook: {url: 'http://169.254.169.254/hook', secretRef: {name: k}}\n      - name: mail\n        email: {smtp: 'smtp.example:587', from: nobody, to: [compliance@acme.example]}\n",
    )
    .expect("write");
    let (code, output) = imgate(&["policy", "lint", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("error: Tenant acme: spec.alerts.receivers[0].webhook.url: 169.254.169.254 is link-local")
            && output.contains("allowPrivateNetwork: true"),
        "{output}"
    );
    assert!(
        output.contains("error: Tenant acme: spec.alerts.receivers[1].email.from: \"nobody\" is not an e-mail address"),
        "{output}"
    );

    std::fs::write(
        dir.join("t.yaml"),
        "apiVersion: imgate.io/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec:\n  archive:\n    s3: {bucket: acme-archive, region: eu-west-2}\n    retention: {days: 30}\n  alerts:\n    receivers:\n      - name: both\n        alertmanager: {url: 'http://am:9093'}\n        syslog: {address: 'siem:6514'}\n",
    )
    .expect("write");
    let (code, output) = imgate(&["policy", "lint", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{output}");
    assert_line(
        &output,
        "t.yaml:10: error: Tenant acme: spec.alerts.receivers[0]: a receiver needs exactly one of alertmanager, webhook, syslog or email",
    );
}
