//! The Helm charts, linted and rendered by the Helm SDK (`tests/charts.py`, helm-python-sdk,
//! no helm binary): every rendered object is the Kubernetes type it claims to be (`imgate
//! operator check`); the arguments the charts give `imgate` are ones it accepts; the operator
//! chart's defaults are the operator's own (so `imgate operator render` previews what an
//! installed operator makes) and its settings reach every tenant's objects; values the schema
//! or the templates must refuse are refused, saying what to set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::imgate_output;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The render report of `tests/charts.py`: each case's manifest file, each refusal's message.
fn report() -> &'static Value {
    static REPORT: OnceLock<Value> = OnceLock::new();
    REPORT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("charts-{}", std::process::id()));
        let output = Command::new("python3")
            .arg(root().join("tests/charts.py"))
            .arg(root().join("charts"))
            .arg(&out)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "the charts do not lint or render (is helm-python-sdk installed? scripts/test installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("a JSON report")
    })
}

/// The rendered manifest of `case`, as a file and as its objects.
fn rendered(case: &str) -> (PathBuf, Vec<Value>) {
    let path = PathBuf::from(
        report()["cases"][case]
            .as_str()
            .unwrap_or_else(|| panic!("no case {case}")),
    );
    let text = std::fs::read_to_string(&path).expect("a rendered manifest");
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    (path, objects.into_iter().filter(|o| !o.is_null()).collect())
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The arguments of the first container of the workload in `objects`.
fn container_args(objects: &[Value], kind: &str) -> Vec<String> {
    find(objects, kind)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string argument").to_owned())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<&str> {
    objects.iter().filter_map(|o| o["kind"].as_str()).collect()
}

#[test]
fn every_rendered_object_is_the_kubernetes_type_it_claims_to_be() {
    let operator = vec![
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRole",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    let cases = [
        ("imgate-defaults", operator.clone()),
        (
            "imgate-single",
            vec![
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRole",
                "Deployment",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
            ],
        ),
        ("imgate-full", operator),
        ("connector-full", vec!["Secret", "Service", "StatefulSet"]),
        ("connector-secret", vec!["Service", "StatefulSet"]),
    ];
    for (case, expected) in cases {
        let (path, objects) = rendered(case);
        assert_eq!(kinds(&objects), expected, "{case}");
        let (code, checked) =
            imgate_output(&["operator", "check", path.to_str().expect("path")], &[]);
        assert_eq!(code, 0, "{case}: {checked}");
        assert!(
            checked.contains(&format!(
                "{} objects, each the type it claims to be",
                objects.len()
            )),
            "{case}: {checked}"
        );
    }
    let (_, objects) = rendered("imgate-defaults");
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["impolicies.imgate.io", "tenants.imgate.io"]);
}

/// Runs `imgate operator render` on an example tenant with `settings`.
fn operator_render(settings: &[String]) -> String {
    let mut args = vec!["operator", "render", "examples/broker-dealer"];
    args.extend(settings.iter().map(String::as_str));
    let (code, out) = imgate_output(&args, &[]);
    assert_eq!(code, 0, "{out}");
    out
}

/// The settings the chart gives `imgate operator run`, without its own listener.
fn operator_settings(case: &str) -> Vec<String> {
    let (_, objects) = rendered(case);
    let args = container_args(&objects, "Deployment");
    assert_eq!(args[..2], ["operator", "run"]);
    args[2..]
        .iter()
        .filter(|a| !a.starts_with("--metrics="))
        .cloned()
        .collect()
}

#[test]
fn the_operator_charts_defaults_are_the_operators_own() {
    let settings = operator_settings("imgate-defaults");
    assert!(!settings.is_empty());
    // The API server's range has no default: the case gives the one value it must.
    assert_eq!(
        operator_render(&settings),
        operator_render(&["--api-server-cidr=172.18.0.2/32".to_owned()]),
        "the chart's defaults ({settings:?}) must be what `imgate operator render` assumes"
    );
}

#[test]
fn the_operator_charts_settings_reach_every_tenants_objects() {
    let settings = operator_settings("imgate-full");
    let out = operator_render(&settings);
    let objects: Vec<Value> = serde_saphyr::from_multiple(&out).expect("YAML");
    let set = find(&objects, "StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["imgate.io/role"], "dataplane", "{pod}");
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/imgate/imgate:0.1.0-rc1"
    );
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "gp3"
    );
    let tunnel = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "tunnel")
        .expect("the tunnel Service");
    assert_eq!(tunnel["spec"]["type"], "NodePort");
    assert_eq!(
        tunnel["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-attributes"],
        "load_balancing.cross_zone.enabled=true"
    );
    assert!(
        out.contains("meridian-capital.tunnel.msp.example"),
        "the tunnel domain names the dataplanes' certificate"
    );
    let egress = &find(&objects, "NetworkPolicy")["spec"]["egress"];
    let api_server: Vec<&str> = egress[2]["to"]
        .as_array()
        .expect("the API server's ranges")
        .iter()
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(api_server, ["10.0.0.0/28", "fd00:10::/120"]);
    assert_eq!(
        egress[3],
        serde_json::json!({"ports": [{"port": 4318, "protocol": "TCP"}]}),
        "the dataplanes reach the trace collector's port"
    );
    let traces: Vec<(&str, &str)> = pod["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(
        traces,
        [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://otel-collector.observability:4318"
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "imgate.tenant=meridian-capital,k8s.namespace.name=imgate-meridian-capital,k8s.pod.name=$(POD_NAME)"
            ),
        ],
        "the dataplanes export traces, saying whose they are"
    );
    let notes = std::fs::read_to_string(
        PathBuf::from(report()["cases"]["imgate-full"].as_str().expect("case"))
            .with_extension("notes"),
    )
    .expect("notes");
    for setting in &settings {
        assert!(
            notes.contains(&format!("'{setting}'")),
            "the notes' preview command carries {setting}: {notes}"
        );
    }
}

#[test]
fn the_operator_deployment_runs_what_imgate_accepts_knowing_its_pod() {
    let (_, objects) = rendered("imgate-full");
    let deployment = find(&objects, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]
    );
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
                && e["value"] == "http://otel-collector.observability:4318"),
        "the operator exports its traces: {container}"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = container_args(&objects, "Deployment");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Outside a cluster the arguments parse and the operator stops at the API server.
    let (code, out) = imgate_output(&args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("cannot reach the Kubernetes API server"),
        "the chart's arguments are accepted: {out}"
    );
}

#[test]
fn the_connector_statefulset_runs_what_imgate_accepts_with_its_token() {
    let (_, objects) = rendered("connector-full");
    let set = find(&objects, "StatefulSet");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let token = &container["env"][0];
    assert_eq!(token["name"], "IMGATE_ENROLLMENT_TOKEN");
    let secret = find(&objects, "Secret");
    let reference = &token["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"], secret["metadata"]["name"]);
    assert_eq!(
        secret["stringData"][reference["key"].as_str().expect("key")],
        "imgate-token-for-the-test"
    );
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        container["volumeMounts"][0]["name"],
        "the identity lives on the connector's volume"
    );
    let service = find(&objects, "Service");
    let ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(ports, ["socks", "http-connect", "xmpp", "metrics"]);
    let args = container_args(&objects, "StatefulSet");
    assert!(
        args.contains(&"--forward=0.0.0.0:5222=xmpp.example.com:5222".to_owned()),
        "{args:?}"
    );
    // With no identity and no token, the parsed arguments get as far as the identity folder.
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(&args)
        .env_remove("IMGATE_ENROLLMENT_TOKEN")
        .output()
        .expect("imgate runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /var/lib/imgate-connector/key.pem (enroll first"),
        "the chart's arguments are accepted: {stderr}"
    );

    let (_, objects) = rendered("connector-secret");
    assert!(
        !kinds(&objects).contains(&"Secret"),
        "an existing Secret is used"
    );
    let container = &find(&objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "acme-token"
    );
    let args = container_args(&objects, "StatefulSet");
    assert!(args.contains(&"--dataplane=[2001:db8::7]:4433".to_owned()));
    assert!(args.contains(&"--server-name=acme.tunnel.msp.example".to_owned()));
}

#[test]
fn values_the_charts_must_refuse_are_refused_saying_what_to_set() {
    let refused = &report()["refused"];
    let expected = [
        (
            "misspelt key",
            "additional properties 'replica' not allowed",
        ),
        (
            "service type",
            "value must be one of 'LoadBalancer', 'NodePort'",
        ),
        ("tunnel domain", "/dataplane/tunnelDomain"),
        ("api server range", "'10.0.0.1' does not match pattern"),
        ("no api server range", "set dataplane.apiServerCIDRs"),
        (
            "otlp endpoint",
            "'otel-collector:4318' does not match pattern",
        ),
        ("endpoint", "'acme:tunnel' does not match pattern"),
        ("no endpoint", "set dataplane to the firm's tunnel endpoint"),
        ("no token", "set enrollment.existingSecret"),
        ("no listener", "nothing to listen on"),
    ];
    for (case, says) in expected {
        let message = refused[case]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: the chart accepted it"));
        assert!(message.contains(says), "{case}: {message}");
    }
}

#[test]
fn the_charts_carry_the_binarys_version() {
    for chart in ["imgate", "imgate-connector"] {
        let text = std::fs::read_to_string(root().join("charts").join(chart).join("Chart.yaml"))
            .expect("Chart.yaml");
        let chart_yaml: Value = serde_saphyr::from_str(&text).expect("YAML");
        assert_eq!(
            chart_yaml["appVersion"],
            env!("CARGO_PKG_VERSION"),
            "{chart}"
        );
    }
}
