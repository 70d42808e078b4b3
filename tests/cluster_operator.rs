//! The operator's answers to what a real cluster does to it, shown with the real program
//! against the in-memory API server (none can be installed here): a write the API server
//! refuses appears on the Tenant (condition and Warning Event) and clears once accepted; a
//! token a dataplane redeems shows on the Tenant at once, not at the next resync; SIGTERM
//! releases the leader Lease so another replica leads at once.

mod common;

use common::LogsOnFailure;
use common::cluster::{Cluster, example_policy, namespace, object, wait_until};
use imgate_dataplane::tunnel::tokens::{Redeemer, Token};
use imgate_fake_api::FakeApi;
use imgate_operator::enrollment::SecretTokens;
use serde_json::Value;

/// The condition `type_` of Tenant `tenant`, once it has one.
fn condition(api: &FakeApi, tenant: &str, type_: &str) -> Option<Value> {
    let tenant = object(api, "tenants", None, tenant)?;
    tenant["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

const INVALID: &str = "StatefulSet.apps \"dataplane\" is invalid: spec.template.spec.topologySpreadConstraints[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set";

#[test]
fn a_refused_apply_shows_on_the_tenant_and_clears_once_the_api_server_accepts_it() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let api = FakeApi::new();
    api.refuse(
        "PATCH",
        "statefulsets",
        "dataplane",
        422,
        "Invalid",
        INVALID,
    );
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        api,
        "refused",
        example_policy("refused"),
    ));
    let _logs = LogsOnFailure(vec![cluster.operator_log.clone()]);
    let ready = wait_until("Ready=False, ApplyRefused", &cluster.operator_log, || {
        condition(&cluster.api, "refused", "Ready").filter(|c| c["reason"] == "ApplyRefused")
    });
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().expect("a message");
    assert!(
        message.contains("apply StatefulSet/dataplane (422 Invalid)") && message.contains(INVALID),
        "{message}"
    );
    let event = wait_until("a Warning Event", &cluster.operator_log, || {
        cluster
            .api
            .all("events")
            .into_iter()
            .find(|e| e["reason"] == "ApplyRefused")
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "Tenant");
    assert_eq!(event["regarding"]["name"], "refused");
    assert!(
        cluster.api.all("horizontalpodautoscalers").is_empty(),
        "nothing after the refused StatefulSet was applied"
    );
    // The cause is fixed (here: the API server accepts the StatefulSet again) and the Tenant
    // changed, as an upgrade of the operator or an edit would change it: it converges at once,
    // rather than at its next retry (which backs off, up to five minutes).
    cluster.api.lift("statefulsets", "dataplane");
    let _entered = runtime.enter();
    let tenants: kube::Api<imgate_crds::Tenant> = kube::Api::all(cluster.client());
    let edit = kube::api::Patch::Merge(
        serde_json::json!({"spec": {"displayName": "Refused, then fixed"}}),
    );
    runtime
        .block_on(tenants.patch("refused", &kube::api::PatchParams::default(), &edit))
        .expect("the API server takes the edit");
    wait_until("Ready again once accepted", &cluster.operator_log, || {
        condition(&cluster.api, "refused", "Ready").filter(|c| c["reason"] != "ApplyRefused")
    });
    assert!(
        object(
            &cluster.api,
            "horizontalpodautoscalers",
            Some(&namespace("refused")),
            "dataplane"
        )
        .is_some()
    );
}

#[test]
fn a_redeemed_token_shows_on_the_tenant_at_once() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        "enrolling",
        example_policy("enrolling"),
    ));
    let _logs = LogsOnFailure(vec![cluster.operator_log.clone()]);
    wait_until("a token on offer", &cluster.operator_log, || {
        condition(&cluster.api, "enrolling", "ConnectorEnrollment")
            .filter(|c| c["reason"] == "TokenAvailable")
    });
    let secret = object(
        &cluster.api,
        "secrets",
        Some(&namespace("enrolling")),
        "connector-enrollment",
    )
    .expect("the enrollment Secret");
    let encoded = secret["data"]["token"].as_str().expect("a token");
    let text = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
        .expect("base64");
    let token = Token::parse(&String::from_utf8(text).expect("text")).expect("a token");
    // A dataplane of the tenant redeems it, as it does when the connector first dials in.
    let mut config = kube::Config::new(cluster.url.parse().expect("a URL"));
    config.default_namespace = namespace("enrolling");
    let connector = runtime.block_on(async {
        let client = kube::Client::try_from(config).expect("a client");
        SecretTokens::new(client, "connector-enrollment", "dataplane-0")
            .redeem(&token)
            .await
            .expect("redeemed")
    });
    assert_eq!(connector, "connector-1");
    // The resync is five minutes away: the watch on the Secret brings it within moments.
    let redeemed = wait_until("Redeemed on the Tenant", &cluster.operator_log, || {
        condition(&cluster.api, "enrolling", "ConnectorEnrollment")
            .filter(|c| c["reason"] == "Redeemed")
    });
    assert!(
        redeemed["message"]
            .as_str()
            .is_some_and(|m| m.contains("dataplane-0")),
        "{redeemed}"
    );
}

#[test]
fn sigterm_releases_the_leader_lease_for_the_next_replica() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        "handover",
        example_policy("handover"),
    ));
    let _logs = LogsOnFailure(vec![cluster.operator_log.clone()]);
    let api = cluster.api.clone();
    let lease = move || object(&api, "leases", Some("imgate-system"), "imgate-operator");
    let held = lease().expect("the leader Lease");
    assert!(held["spec"]["holderIdentity"].is_string(), "{held}");
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &cluster.operator_pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let exit = cluster.operator_exit();
    assert!(exit.success(), "a clean exit on SIGTERM: {exit}");
    let released = lease().expect("the Lease stays");
    assert!(
        released["spec"]["holderIdentity"].is_null(),
        "released: {released}"
    );
    assert_eq!(released["spec"]["leaseDurationSeconds"], 1, "{released}");
    let log = std::fs::read_to_string(&cluster.operator_log).unwrap_or_default();
    assert!(log.contains("released the leader lease"), "{log}");
}
