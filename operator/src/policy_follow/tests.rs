//! Following the policy ConfigMap against the scripted API server, under the dataplanes'
//! RBAC.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::reconcile::chart_rbac::Subject;
use crate::reconcile::fixtures::{Reply, list, pair_as};

const PATH: &str = "/api/v1/namespaces/imgate-acme/configmaps";

fn policy_map(revision: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "policy", "namespace": "imgate-acme", "resourceVersion": version,
                        "annotations": {POLICY_REVISION: revision}},
           "data": {POLICY_FILE: format!("# the set of revision {revision}\n")}})
}

fn modified(object: Value) -> Value {
    json!({"type": "MODIFIED", "object": object})
}

#[tokio::test]
async fn each_new_policy_set_is_handed_on_once_as_the_watch_brings_it() {
    let (client, mut server) = pair_as(Subject::Dataplane, "imgate-acme");
    let (sender, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let following = tokio::spawn(async move {
        follow(
            Api::default_namespaced(client),
            "policy",
            |revision, yaml| {
                sender
                    .send((revision.to_owned(), yaml.to_owned()))
                    .expect("the test listens");
            },
        )
        .await;
    });
    let mut listing = list("ConfigMap", vec![policy_map("aaa111", "10")]);
    listing["metadata"]["resourceVersion"] = "10".into();
    let listed = server
        .expect(Method::GET, PATH, Reply::Json(StatusCode::OK, listing))
        .await;
    assert!(
        listed.uri.contains("fieldSelector=metadata.name%3Dpolicy"),
        "{}",
        listed.uri
    );
    let watched = server
        .expect(
            Method::GET,
            PATH,
            Reply::Lines(vec![
                modified(policy_map("bbb222", "11")),
                modified(policy_map("bbb222", "12")),
                modified(policy_map("ccc333", "13")),
            ]),
        )
        .await;
    assert!(
        watched.uri.contains("watch=true") && watched.uri.contains("resourceVersion=10"),
        "{}",
        watched.uri
    );
    let mut revisions = Vec::new();
    while revisions.len() < 3 {
        let (revision, yaml) = tokio::time::timeout(Duration::from_secs(10), taken.recv())
            .await
            .expect("handed on in time")
            .expect("still following");
        assert_eq!(yaml, format!("# the set of revision {revision}\n"));
        revisions.push(revision);
    }
    assert_eq!(revisions, ["aaa111", "bbb222", "ccc333"]);
    following.abort();
    assert!(
        taken.try_recv().is_err(),
        "an unchanged set is not handed on again"
    );
}
