//! Following the policy ConfigMap against the scripted API server, under the dataplanes'
//! RBAC.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::*;
use crate::reconcile::chart_rbac::Subject;
use crate::reconcile::fixtures::{Reply, list, pair_as};

const PATH: &str = "/api/v1/namespaces/imgate-acme/configmaps";

/// The ConfigMap at `version` delivering the policy set of `revision`, with `extra` data.
fn policy_map(revision: &str, version: &str, extra: &[(&str, &str)]) -> Value {
    let mut data = json!({POLICY_FILE: format!("# the set of revision {revision}\n")});
    for (key, value) in extra {
        data[*key] = (*value).into();
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "policy", "namespace": "imgate-acme", "resourceVersion": version,
                        "annotations": {POLICY_REVISION: revision}},
           "data": data})
}

fn modified(object: Value) -> Value {
    json!({"type": "MODIFIED", "object": object})
}

/// Tells the test what it was handed, one line each.
struct Recorder(UnboundedSender<String>);

impl Follower for Recorder {
    fn policy(&mut self, revision: &str, yaml: &str) {
        assert_eq!(yaml, format!("# the set of revision {revision}\n"));
        self.0
            .send(format!("policy {revision}"))
            .expect("listening");
    }

    fn identity(&mut self, yaml: Option<&str>) {
        self.0
            .send(format!("identity {}", yaml.unwrap_or("none")))
            .expect("listening");
    }

    fn revoked(&mut self, ids: &BTreeSet<String>) {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.0
            .send(format!("revoked [{}]", ids.join(" ")))
            .expect("listening");
    }
}

#[tokio::test]
async fn each_changed_part_is_handed_on_once_as_the_watch_brings_it() {
    let (client, mut server) = pair_as(Subject::Dataplane, "imgate-acme");
    let (sender, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let following = tokio::spawn(async move {
        follow(
            Api::default_namespaced(client),
            "policy",
            &mut Recorder(sender),
        )
        .await;
    });
    let mut listing = list("ConfigMap", vec![policy_map("aaa111", "10", &[])]);
    listing["metadata"]["resourceVersion"] = "10".into();
    let listed = server
        .expect(Method::GET, PATH, Reply::Json(StatusCode::OK, listing))
        .await;
    assert!(
        listed.uri.contains("fieldSelector=metadata.name%3Dpolicy"),
        "{}",
        listed.uri
    );
    let identity = "static:\n- handle: bob@chat.example\n  person: bob@acme.example\n";
    let mut no_policy = policy_map("ddd444", "16", &[]);
    no_policy["data"] = json!({IDENTITY_FILE: "garbage"});
    let watched = server
        .expect(
            Method::GET,
            PATH,
            Reply::Lines(vec![
                modified(policy_map("bbb222", "11", &[])),
                modified(policy_map("bbb222", "12", &[])),
                modified(policy_map("bbb222", "13", &[(IDENTITY_FILE, identity)])),
                modified(policy_map(
                    "bbb222",
                    "14",
                    &[
                        (IDENTITY_FILE, identity),
                        (REVOKED_FILE, "site-b\n\n site-a \n"),
                    ],
                )),
                modified(no_policy),
                modified(policy_map(
                    "ccc333",
                    "17",
                    &[(REVOKED_FILE, "site-a\nsite-b\n")],
                )),
            ]),
        )
        .await;
    assert!(
        watched.uri.contains("watch=true") && watched.uri.contains("resourceVersion=10"),
        "{}",
        watched.uri
    );
    let mut handed = Vec::new();
    while handed.len() < 8 {
        let line = tokio::time::timeout(Duration::from_secs(10), taken.recv())
            .await
            .expect("handed on in time")
            .expect("still following");
        handed.push(line);
    }
    assert_eq!(
        handed,
        [
            "policy aaa111".to_owned(),
            "identity none".to_owned(),
            "revoked []".to_owned(),
            "policy bbb222".to_owned(),
            format!("identity {identity}"),
            "revoked [site-a site-b]".to_owned(),
            "policy ccc333".to_owned(),
            "identity none".to_owned(),
        ]
    );
    following.abort();
    assert!(
        taken.try_recv().is_err(),
        "an unchanged part is not handed on again"
    );
}
