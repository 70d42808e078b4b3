//! A tenant's dataplanes in a cluster each keep a tunnel folder of their own, yet a connector
//! reaches whichever one its load balancer picks: the record of each connector's newest
//! certificate is therefore shared, in the Secret the operator makes
//! (`connector-generations`), which `imgate up --generations-secret` updates when it signs a
//! certificate and follows through the API. A copy of a connector's key and certificate stops
//! working at every dataplane once the real connector renews at one of them. The API server is
//! the in-memory one (none can be installed here).

mod common;

use common::cluster::{Cluster, example_policy, namespace, object, wait_until};
use common::tunnel::{enroll, mint_token, renew, run_connector, wait_until_connected};
use common::{LogsOnFailure, free_port, imgate_up_with_env, wait_for_line};
use imgate_fake_api::FakeApi;
use serde_json::Value;

/// `imgate up`'s tenant, and the Tenant's name.
const TENANT: &str = "local";

#[test]
fn a_certificate_one_dataplane_replaced_stops_working_at_the_others() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cluster = runtime.block_on(Cluster::start(
        dir.path(),
        FakeApi::new(),
        TENANT,
        example_policy(TENANT),
    ));
    let record = || {
        object(
            &cluster.api,
            "secrets",
            Some(&namespace(TENANT)),
            "connector-generations",
        )
    };
    wait_until(
        "the operator makes the record",
        &cluster.operator_log,
        record,
    );

    // Two dataplanes, each with its own data and tunnel folder, under the tenant's one tunnel
    // CA (here the first one's); certificates of 20 minutes are in their last third from the
    // start, and a replaced one gets no grace.
    let kubeconfig = cluster.kubeconfig.to_string_lossy().into_owned();
    let start = |name: &str, extra: &[&str]| {
        let data = dir.path().join(name);
        let tunnel: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let mut args = vec![
            "--tenant".to_owned(),
            TENANT.into(),
            "--writer".into(),
            name.into(),
            "--tunnel".into(),
            tunnel.to_string(),
            "--generations-secret".into(),
            "connector-generations".into(),
            "--connector-lifetime".into(),
            "20m".into(),
            "--renewal-grace".into(),
            "0s".into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (process, _) = imgate_up_with_env(
            free_port(),
            &data,
            &args,
            &[("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")],
        );
        (process, data, tunnel)
    };
    let (_zero, data_zero, tunnel_zero) = start("dataplane-0", &[]);
    let ca = data_zero.join("tunnel");
    let (_one, data_one, tunnel_one) =
        start("dataplane-1", &["--tunnel-ca", &ca.to_string_lossy()]);
    let logs = [
        data_zero.with_extension("log"),
        data_one.with_extension("log"),
    ];
    let _logs = LogsOnFailure(logs.to_vec());

    let identity = dir.path().join("desk-7");
    let enrolled = enroll(&mint_token(&data_zero, "desk-7"), &[tunnel_zero], &identity);
    assert!(enrolled.status.success(), "{enrolled:?}");
    let stolen = dir.path().join("stolen");
    std::fs::create_dir_all(&stolen).expect("dir");
    for file in ["ca.pem", "key.pem", "cert.pem"] {
        std::fs::copy(identity.join(file), stolen.join(file)).expect("copy");
    }

    // The real connector renews at dataplane 0; the record in the Secret says so.
    let renewed = renew(&identity, tunnel_zero);
    assert!(renewed.status.success(), "{renewed:?}");
    wait_for_line(&logs[0], &["connector renewed its certificate", "desk-7"]);
    let secret = record().expect("the record");
    let stored = secret["data"]["generations.json"]
        .as_str()
        .expect("a record");
    let stored =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stored).expect("base64");
    let stored: Value = serde_json::from_slice(&stored).expect("JSON");
    assert!(stored["desk-7"]["sha256"].is_string(), "{stored}");

    // The copy is refused at dataplane 1, which signed nothing for it, and cannot renew there.
    let thief = run_connector(&stolen, &[tunnel_one], "127.0.0.1:9", &[]);
    wait_for_line(
        &logs[1],
        &["connector desk-7 presented a certificate that a newer one replaced"],
    );
    wait_for_line(&thief.log, &["a newer one replaced"]);
    drop(thief);
    let refused = renew(&stolen, tunnel_one);
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("a newer one replaced"), "{said}");

    // The real connector is served there.
    let connector = run_connector(&identity, &[tunnel_one], "127.0.0.1:9", &[]);
    wait_until_connected(&connector);
    let _ = data_one;
}
