//! A policy change travels the whole cluster path: an IMPolicy applied to the API server is
//! compiled by `imgate operator run` into the tenant's policy ConfigMap, which a running
//! `imgate up --policy-config-map` follows and puts in force; an invalid policy is refused by
//! the operator and the dataplane keeps enforcing the last good one. The dataplane reports
//! back (`--report-lease`): the Tenant's status shows the revision it enforces, and that every
//! dataplane enforces the delivered one, beside the operator's own conditions, and loses it
//! when the dataplane stops. The API server is the in-memory one (none can be installed here);
//! the operator and the dataplane are the real programs, reaching it through a kubeconfig.

mod common;

use std::time::Duration;

use common::cluster::{
    Cluster, namespace, object, policy_revision, wait_until, wait_until_showing,
};
use common::{LogsOnFailure, free_port, imgate_up_with_env, wait_for_line};
use imgate_crds::IMPolicy;
use imgate_fake_api::FakeApi;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const TENANT: &str = "acme";

/// The tenant's one IMPolicy, blocking `keyword`, or with a rule whose regular expression does
/// not compile when `keyword` is `None`.
fn policy(keyword: Option<&str>) -> Value {
    let matcher = match keyword {
        Some(keyword) => json!({"keywords": [keyword]}),
        None => json!({"regex": "(unclosed"}),
    };
    json!({
        "apiVersion": "imgate.io/v1alpha1", "kind": "IMPolicy",
        "metadata": {"name": "deals", "namespace": TENANT},
        "spec": {"tenantRef": TENANT, "content": [{"name": "deal-names", "match": matcher, "action": "block"}]},
    })
}

/// `imgate up` as the operator runs it for the tenant (following its policy ConfigMap and
/// reporting in Lease `dataplane-0`), with its data in `data` and the `extra` options.
fn dataplane(cluster: &Cluster, data: &std::path::Path, extra: &[&str]) -> common::Killed {
    let kubeconfig = cluster.kubeconfig.to_string_lossy();
    let mut args = vec![
        "--tenant",
        TENANT,
        "--policy-config-map",
        "policy",
        "--report-lease",
        "dataplane-0",
    ];
    args.extend_from_slice(extra);
    let env = [("KUBECONFIG", &*kubeconfig), ("RUST_LOG", "info")];
    imgate_up_with_env(free_port(), data, &args, &env).0
}

#[test]
fn a_policy_applied_to_the_api_server_is_in_force_in_a_running_dataplane() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        TENANT,
        policy(Some("project falcon")),
    ));
    let (api, operator_log) = (&cluster.api, &cluster.operator_log);
    let first = cluster.revision.clone();

    let data = dir.path().join("dataplane");
    let log = data.with_extension("log");
    let _logs = LogsOnFailure(vec![operator_log.clone(), log.clone()]);
    let dataplane = dataplane(&cluster, &data, &[]);
    wait_for_line(
        &log,
        &[&format!(
            "policy revision {first} from ConfigMap policy, in force"
        )],
    );

    let _entered = runtime.enter();
    let policies: Api<IMPolicy> = Api::namespaced(cluster.client(), TENANT);
    let apply = |policy: Value| {
        runtime
            .block_on(policies.patch(
                "deals",
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(policy),
            ))
            .expect("the API server takes the apply");
    };
    apply(policy(Some("project osprey")));
    let second = policy_revision(api, TENANT, Some(&first), operator_log);
    wait_for_line(
        &log,
        &[&format!(
            "policy revision {second} from ConfigMap policy, in force"
        )],
    );

    apply(policy(None));
    let refused = wait_until("the invalid policy's condition", operator_log, || {
        let stored = object(api, "impolicies", Some(TENANT), "deals")?;
        let conditions = stored["status"]["conditions"].as_array()?;
        conditions
            .iter()
            .find(|c| c["type"] == "Accepted" && c["status"] == "False")
            .cloned()
    });
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("(unclosed"),
        "the condition names the bad expression: {refused}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let kept =
        object(api, "configmaps", Some(&namespace(TENANT)), "policy").expect("the ConfigMap");
    assert_eq!(
        kept["metadata"]["annotations"]["imgate.io/policy-revision"], second,
        "the operator keeps delivering the last good policy"
    );
    let text = std::fs::read_to_string(&log).expect("the dataplane's log");
    assert!(
        !text.contains("from ConfigMap policy refused"),
        "the invalid policy never reached the dataplane:\n{text}"
    );

    // What the report passes through, should it not arrive (the logs follow on failure).
    let show = || {
        format!(
            "the Tenant: {}\nthe report Leases: {}",
            object(api, "tenants", None, TENANT).unwrap_or_default(),
            Value::Array(api.all("leases")),
        )
    };
    let reported = wait_until_showing(
        "the dataplane's report in the Tenant's status",
        show,
        || {
            let status = object(api, "tenants", None, TENANT)?["status"].clone();
            let pod = status["dataplanes"].as_array()?.first()?.clone();
            let enforced = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "PolicyEnforced" && c["status"] == "True");
            (pod["name"] == "dataplane-0" && pod["policyRevision"] == second.as_str() && enforced)
                .then_some(status)
        },
    );
    let enforced = reported["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PolicyEnforced"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        enforced["message"],
        format!("every dataplane (1) enforces revision {second}"),
        "{reported}"
    );
    let types: Vec<&str> = reported["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    for wanted in ["Ready", "PolicyApplied", "ArchiveReachable"] {
        assert!(types.contains(&wanted), "{wanted} in {reported}");
    }
    assert_eq!(reported["activeSessions"], 0, "{reported}");

    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &dataplane.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let gone = wait_until(
        "the stopped dataplane's report leaving the status",
        operator_log,
        || {
            let status = object(api, "tenants", None, TENANT)?["status"].clone();
            let none = status["dataplanes"].as_array().is_none_or(Vec::is_empty);
            none.then_some(status)
        },
    );
    let archive = gone["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ArchiveReachable"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(archive["reason"], "NoReports", "{gone}");
    assert!(object(api, "leases", Some(&namespace(TENANT)), "dataplane-0").is_none());
}

/// In a cluster an alert setting must not stop a tenant's traffic: a dataplane whose alerts
/// cannot start runs on without them, archives why, and the Tenant's `AlertsDelivered` says
/// so through the operator.
#[test]
fn a_dataplane_whose_alerts_cannot_start_runs_and_the_tenant_says_why() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        TENANT,
        policy(Some("project falcon")),
    ));
    let (api, operator_log) = (&cluster.api, &cluster.operator_log);
    let data = dir.path().join("dataplane");
    let log = data.with_extension("log");
    let _logs = LogsOnFailure(vec![operator_log.clone(), log.clone()]);
    let alerts = dir.path().join("alerts.yaml");
    std::fs::write(
        &alerts,
        "groupWindow: 100ms\nreceivers:\n- name: am\n  alertmanager: {url: 'https://am.example'}\n",
    )
    .expect("alerts");
    // The port accepts: the dataplane runs.
    let dataplane = dataplane(
        &cluster,
        &data,
        &["--alerts", alerts.to_str().expect("utf-8")],
    );
    let show = || {
        format!(
            "the Tenant: {}",
            object(api, "tenants", None, TENANT).unwrap_or_default()
        )
    };
    let condition = wait_until_showing("AlertsDelivered in the Tenant's status", show, || {
        let status = object(api, "tenants", None, TENANT)?["status"].clone();
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "AlertsDelivered" && c["status"] == "False")
            .cloned()
    });
    assert_eq!(condition["reason"], "ReceiverFailing", "{condition}");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("dataplane-0: spec.alerts:") && message.contains("groupWindow"),
        "{condition}"
    );
    let records = common::stop_and_read_tenant(dataplane, &data, TENANT);
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "system" && r["event"] == "alerts-not-started"),
        "why is archived"
    );
}
