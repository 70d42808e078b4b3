//! Changes to a Tenant reach a running dataplane through the API, without a restart: who
//! handles are (`spec.identity`) and which connectors are revoked
//! (`spec.tunnel.revokedConnectors`). `imgate operator run` writes them into the tenant's
//! policy ConfigMap; `imgate up --policy-config-map` follows it. Real XMPP clients chat
//! through `imgate connector` and the tunnel to Prosody, their messages archived under the
//! people the changed identity names (a later change that cannot be used is refused, and the
//! last good one stays); the revoked connector's open connection is closed. The API server is
//! the in-memory one (none can be installed here).

mod common;

use common::cluster::{Cluster, namespace, object, wait_until};
use common::tunnel::{mint_token, run_connector, wait_until_connected};
use common::xmpp::{check_inspected_chat, clients};
use common::{free_port, imgate_up_with_env, prosody, stop_and_read, wait_for_line};
use imgate_crds::Tenant;
use imgate_fake_api::FakeApi;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// `imgate up`'s own tenant name, under which the archive is read back.
const TENANT: &str = "local";

/// The example policy `imgate up` enforces on its own (interception, a disclaimer, cards
/// redacted, a deal name blocked), as the tenant's IMPolicy.
fn inspecting_policy() -> Value {
    let text = include_str!("../src/default-policy.yaml");
    let mut policy: Value = serde_saphyr::from_str(text).expect("an IMPolicy");
    policy["metadata"]["namespace"] = TENANT.into();
    policy["spec"]["tenantRef"] = TENANT.into();
    policy
}

#[test]
fn identity_and_revocations_changed_on_the_tenant_reach_a_running_dataplane() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        TENANT,
        inspecting_policy(),
    ));
    let revision = &cluster.revision;

    let (_prosody, server_port, server_cert) = prosody(dir.path());
    let data = dir.path().join("dataplane");
    let log = data.with_extension("log");
    let tunnel = format!("127.0.0.1:{}", free_port());
    let kubeconfig_text = cluster.kubeconfig.to_string_lossy();
    let (dataplane, _) = imgate_up_with_env(
        server_port,
        &data,
        &[
            "--tenant",
            TENANT,
            "--policy-config-map",
            "policy",
            "--tunnel",
            &tunnel,
            "--drain-seconds",
            "1",
            "--extra-roots",
            &server_cert.to_string_lossy(),
        ],
        &[("KUBECONFIG", &kubeconfig_text), ("RUST_LOG", "info")],
    );
    for line in [
        &format!("policy revision {revision} from ConfigMap policy, in force"),
        "identity sources from ConfigMap policy in force: 1 static handle",
        "revoked connectors from ConfigMap policy: []",
    ] {
        wait_for_line(&log, &[line]);
    }

    let _entered = runtime.enter();
    let tenants: Api<Tenant> = Api::all(cluster.client());
    let change = |spec: Value| {
        runtime
            .block_on(tenants.patch(
                TENANT,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            ))
            .expect("the API server takes the change");
    };
    change(json!({"identity": {"static": [
        {"handle": "alice@localhost", "person": "alice@acme.example", "groups": ["traders"]},
        {"handle": "bob@localhost", "person": "bob@acme.example"},
    ]}}));
    wait_for_line(
        &log,
        &["identity sources from ConfigMap policy in force: 2 static handles"],
    );
    // A directory the dataplane cannot bind to (its bind Secret is not in its environment)
    // is refused, and the handles in force stay.
    change(json!({"identity": {"ldap": {
        "url": "ldap://directory.acme.example", "baseDN": "dc=acme,dc=example",
        "bindSecretRef": {"name": "directory-bind"}, "handleAttributes": {"xmpp": "imHandle"},
    }}}));
    wait_for_line(
        &log,
        &[
            "identity sources from ConfigMap policy refused",
            "IMGATE_LDAP_BIND_DN",
        ],
    );

    let identity = dir.path().join("connector-desk-1");
    let token = mint_token(&data, "desk-1");
    let server = format!("127.0.0.1:{server_port}");
    let connector = run_connector(
        &identity,
        &[&tunnel],
        &server,
        &["--enrollment-token", &token],
    );
    wait_until_connected(&connector);
    let received = clients(connector.port, &data.join("ca/ca.pem"), &["chat"]);

    change(json!({"tunnel": {"revokedConnectors": ["desk-1"]}}));
    wait_until(
        "the revocation in the policy ConfigMap",
        &cluster.operator_log,
        || {
            let map = object(
                &cluster.api,
                "configmaps",
                Some(&namespace(TENANT)),
                "policy",
            )?;
            (map["data"]["revoked-connectors"] == "desk-1\n").then_some(())
        },
    );
    wait_for_line(
        &log,
        &["revoked connectors from ConfigMap policy: [desk-1]"],
    );
    wait_for_line(
        &log,
        &["closing a revoked connector's connection", "desk-1"],
    );
    wait_for_line(&connector.log, &["connector desk-1 is revoked"]);

    let records = stop_and_read(dataplane, &data);
    check_inspected_chat(&received, &records);
    let people: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["type"] == "identity")
        .map(|r| {
            (
                r["handle"].as_str().unwrap_or_default(),
                r["person"].as_str().unwrap_or_default(),
                r["source"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        people.contains(&("alice@localhost", "alice@acme.example", "static")),
        "alice is known by the identity the change gave her: {people:?}"
    );
}
