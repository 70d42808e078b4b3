//! What the operator and the dataplanes rely on this server for, each shown through
//! [`FakeApi::handle`] as a client's request would reach it.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use futures::StreamExt;
use serde_json::{Value, json};

use super::FakeApi;

const SECRETS: &str = "/api/v1/namespaces/imgate-acme/secrets";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/imgate-acme/statefulsets";
const TENANTS: &str = "/apis/imgate.io/v1alpha1/tenants";

/// Sends a request with `headers`; the status and the body as JSON.
async fn send_with(
    api: &FakeApi,
    method: Method,
    uri: &str,
    headers: &[(&'static str, &str)],
    body: Value,
) -> (StatusCode, Value) {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).expect("a header"));
    }
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let uri: Uri = uri.parse().expect("a URI");
    let response = api.clone().handle(method, uri, map, bytes).await;
    let code = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn send(api: &FakeApi, method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
    send_with(api, method, uri, &[], body).await
}

const APPLY: [(&str, &str); 1] = [("content-type", "application/apply-patch+yaml")];

fn stateful_set(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "dataplane", "labels": {"imgate.io/tenant": "acme"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
}

#[tokio::test]
async fn create_refuses_a_second_object_of_the_same_name() {
    let api = FakeApi::new();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tunnel-ca"}});
    let (code, created) = send(&api, Method::POST, SECRETS, secret.clone()).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(
        created["metadata"]["namespace"], "imgate-acme",
        "from the path"
    );
    assert!(created["metadata"]["uid"].is_string());
    let (code, again) = send(&api, Method::POST, SECRETS, secret).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(again["reason"], "AlreadyExists");
}

#[tokio::test]
async fn apply_creates_then_replaces_keeping_identity_status_and_bumping_generation() {
    let api = FakeApi::new();
    let path = format!("{STATEFULSETS}/dataplane?fieldManager=imgate-operator&force=true");
    let (code, first) = send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(first["metadata"]["generation"], 1);
    assert_eq!(
        first["status"]["readyReplicas"], 1,
        "the stand-in controller reports a ready replica"
    );
    let (_, same) = send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    assert_eq!(
        same["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "a write that changes nothing is no write"
    );
    let (_, changed) = send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("two")).await;
    assert_eq!(changed["metadata"]["generation"], 2);
    assert_eq!(changed["metadata"]["uid"], first["metadata"]["uid"]);
    assert_ne!(
        changed["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert_eq!(changed["status"], first["status"]);
}

#[tokio::test]
async fn a_write_at_an_old_resource_version_conflicts() {
    let api = FakeApi::new();
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "connector-enrollment", "annotations": {"a": "1"}}});
    let (_, created) = send(&api, Method::POST, SECRETS, secret).await;
    let read_at = created["metadata"]["resourceVersion"].clone();
    let mut update = created.clone();
    update["metadata"]["annotations"]["imgate.io/redeemed"] = "by dataplane-0".into();
    let path = format!("{SECRETS}/connector-enrollment");
    let (code, _) = send(&api, Method::PUT, &path, update.clone()).await;
    assert_eq!(code, StatusCode::OK, "the first redemption wins");
    update["metadata"]["annotations"]["imgate.io/redeemed"] = "by dataplane-1".into();
    update["metadata"]["resourceVersion"] = read_at;
    let (code, lost) = send(&api, Method::PUT, &path, update).await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "the second, read at the same version, loses"
    );
    assert_eq!(lost["reason"], "Conflict");
}

#[tokio::test]
async fn status_applies_merge_conditions_by_type_across_field_managers() {
    let api = FakeApi::new();
    api.insert(
        "tenants",
        json!({"apiVersion": "imgate.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"x": 1}}),
    );
    let status = |manager: &str| format!("{TENANTS}/acme/status?fieldManager={manager}&force=true");
    let operator = json!({"status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True"}, {"type": "TunnelReady", "status": "True"}]}});
    send_with(
        &api,
        Method::PATCH,
        &status("imgate-operator"),
        &APPLY,
        operator,
    )
    .await;
    let reports = json!({"status": {"activeSessions": 4, "conditions": [
        {"type": "ArchiveReachable", "status": "True"}]}});
    send_with(
        &api,
        Method::PATCH,
        &status("imgate-operator-reports"),
        &APPLY,
        reports,
    )
    .await;
    let operator_again = json!({"status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "False"}]}});
    let (_, tenant) = send_with(
        &api,
        Method::PATCH,
        &status("imgate-operator"),
        &APPLY,
        operator_again,
    )
    .await;
    let types: Vec<(&str, &str)> = tenant["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        types,
        [("Ready", "False"), ("ArchiveReachable", "True")],
        "the operator's TunnelReady, left out, goes; the reports' condition stays"
    );
    assert_eq!(tenant["status"]["activeSessions"], 4);
    assert_eq!(
        tenant["metadata"]["generation"], 1,
        "a status write bumps no generation"
    );
}

#[tokio::test]
async fn lists_select_by_label_and_field_and_answer_metadata_when_asked() {
    let api = FakeApi::new();
    for (name, managed) in [
        ("connector-enrollment", true),
        ("tunnel-ca", true),
        ("other", false),
    ] {
        let labels = if managed {
            json!({"app.kubernetes.io/managed-by": "imgate-operator"})
        } else {
            json!({})
        };
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": labels}, "data": {"token": "c2VjcmV0"}});
        send(&api, Method::POST, SECRETS, secret).await;
    }
    let uri = "/api/v1/secrets?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dimgate-operator&fieldSelector=metadata.name%3Dconnector-enrollment";
    let (_, full) = send(&api, Method::GET, uri, Value::Null).await;
    let items = full["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["data"]["token"], "c2VjcmV0");
    let accept = [(
        "accept",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )];
    let (_, metadata) = send_with(&api, Method::GET, uri, &accept, Value::Null).await;
    let item = &metadata["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert_eq!(item["metadata"]["name"], "connector-enrollment");
    assert!(
        item["data"].is_null(),
        "no keys in a metadata answer: {item}"
    );
}

#[tokio::test]
async fn a_watch_sees_changes_and_deletions_but_not_writes_that_change_nothing() {
    let api = FakeApi::new();
    let uri: Uri = format!("{STATEFULSETS}?watch=true").parse().expect("a URI");
    let watch = api
        .clone()
        .handle(Method::GET, uri, HeaderMap::new(), Bytes::new())
        .await;
    let mut events = watch.into_body().into_data_stream();
    let path = format!("{STATEFULSETS}/dataplane?fieldManager=f&force=true");
    send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("two")).await;
    send(
        &api,
        Method::DELETE,
        &format!("{STATEFULSETS}/dataplane"),
        Value::Null,
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let chunk = events.next().await.expect("an event").expect("bytes");
        for line in String::from_utf8_lossy(&chunk).lines() {
            let event: Value = serde_json::from_str(line).expect("a JSON event");
            seen.push(event["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn a_scripted_refusal_answers_as_the_api_server_does_until_it_is_lifted() {
    let api = FakeApi::new();
    let message = "StatefulSet.apps \"dataplane\" is invalid: spec.template.spec.topologySpreadConstraints[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set";
    api.refuse(
        "PATCH",
        "statefulsets",
        "dataplane",
        422,
        "Invalid",
        message,
    );
    let path = format!("{STATEFULSETS}/dataplane?fieldManager=f&force=true");
    let (code, refused) = send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (
            refused["kind"].as_str(),
            refused["reason"].as_str(),
            refused["code"].as_u64()
        ),
        (Some("Status"), Some("Invalid"), Some(422))
    );
    assert_eq!(refused["message"], message);
    assert!(api.all("statefulsets").is_empty(), "nothing was stored");
    let other = format!("{STATEFULSETS}/other?fieldManager=f&force=true");
    let (code, _) = send_with(&api, Method::PATCH, &other, &APPLY, stateful_set("one")).await;
    assert_eq!(code, StatusCode::OK, "only the object named is refused");
    api.refuse(
        "POST",
        "secrets",
        "tunnel-ca",
        403,
        "Forbidden",
        "secrets is forbidden",
    );
    let secret = json!({"metadata": {"name": "tunnel-ca"}});
    let (code, _) = send(&api, Method::POST, SECRETS, secret).await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "a create is refused by the name in its body"
    );
    api.lift("statefulsets", "dataplane");
    let (code, _) = send_with(&api, Method::PATCH, &path, &APPLY, stateful_set("one")).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn metadata_gets_leave_out_the_keys() {
    let api = FakeApi::new();
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tunnel-ca", "annotations": {"imgate.io/ca-sha256": "ab"}},
        "data": {"ca.key": "c2VjcmV0"}});
    send(&api, Method::POST, SECRETS, secret).await;
    let accept = [(
        "accept",
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    )];
    let path = format!("{SECRETS}/tunnel-ca");
    let (_, meta) = send_with(&api, Method::GET, &path, &accept, Value::Null).await;
    assert_eq!(meta["metadata"]["annotations"]["imgate.io/ca-sha256"], "ab");
    assert!(meta["data"].is_null());
    let (code, _) = send(&api, Method::GET, &format!("{SECRETS}/absent"), Value::Null).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_update_replaces_the_object_and_a_merge_patch_merges() {
    let api = FakeApi::new();
    let leases = "/apis/coordination.k8s.io/v1/namespaces/imgate-system/leases";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "imgate-operator"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15}});
    let (_, created) = send(&api, Method::POST, leases, lease).await;
    let mut released = created.clone();
    released["spec"] = json!({"leaseDurationSeconds": 1});
    let path = format!("{leases}/imgate-operator");
    let (code, replaced) = send(&api, Method::PUT, &path, released).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        replaced["spec"]["holderIdentity"].is_null(),
        "a field the update leaves out is gone: {replaced}"
    );
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    let (_, merged) = send(
        &api,
        Method::PATCH,
        &path,
        json!({"spec": {"holderIdentity": "replica-b"}}),
    )
    .await;
    assert_eq!(
        merged["spec"],
        json!({"holderIdentity": "replica-b", "leaseDurationSeconds": 1})
    );
}
