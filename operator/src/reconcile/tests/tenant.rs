//! Tenant reconcile scenarios: create, update, steady state, drift, conflict, invalid
//! policy, deletion and API errors.

use super::*;
use crate::desired::desired;
use crate::examples::{policies, tenant};
use crate::policy::PolicySet;
use crate::reconcile::controller::{error_policy, tenant_of, tenant_of_policy};
use crate::reconcile::finalizer::DRAIN_POLL;
use crate::reconcile::tenant::RESYNC;
use k8s_openapi::api::apps::v1::StatefulSet;

fn harbor() -> (Tenant, Vec<IMPolicy>) {
    (
        tenant("small-firm/tenant.yaml"),
        policies(&["small-firm/policy.yaml"]),
    )
}

/// An answer carrying `object` as the server holds it, with the request merged over it.
fn stored<K: serde::Serialize>(object: &K) -> Reply {
    Reply::EchoOver(serde_json::to_value(object).expect("JSON"))
}

/// Expects the write of the small firm's policy's status.
async fn policy_status(server: &mut ApiServer) -> Seen {
    let path = "/apis/imgate.io/v1alpha1/namespaces/harbor-dental/impolicies/basics/status";
    server
        .expect(Method::PATCH, path, stored(&harbor().1[0]))
        .await
}

/// Expects the write of the small firm's status.
async fn tenant_status(server: &mut ApiServer) -> Seen {
    let path = format!("{}/status", tenant_path());
    server
        .expect(Method::PATCH, &path, stored(&harbor().0))
        .await
}

fn objects(tenant: &Tenant, policies: &[IMPolicy]) -> Vec<Object> {
    let set = PolicySet::build(TENANT, policies).expect("the example compiles");
    desired(tenant, Some(&set), &Settings::default())
}

/// The token in the body of an enrollment Secret's creation.
fn enrollment_token(created: &Seen) -> imgate_dataplane::tunnel::tokens::Token {
    use base64::Engine;
    let text = created.body["data"]["token"].as_str().expect("a token");
    let text = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    imgate_dataplane::tunnel::tokens::Token::parse(std::str::from_utf8(&text).expect("UTF-8"))
        .expect("a token")
}

/// A policy of the small firm with a regular expression that does not compile.
fn broken(mut policy: IMPolicy) -> IMPolicy {
    let rule = &mut policy.spec.content[0];
    rule.matcher.detector = None;
    rule.matcher.regex = Some("(unclosed".into());
    policy.metadata.generation = Some(2);
    policy
}

/// Expects the finalizer's addition to `tenant`, answered with the Tenant holding it.
async fn add_finalizer(server: &mut ApiServer, tenant: &Tenant) -> Seen {
    let holding = serde_json::to_value(finalized(tenant.clone())).expect("JSON");
    server
        .expect(
            Method::PATCH,
            &tenant_path(),
            Reply::Json(StatusCode::OK, holding),
        )
        .await
}

/// A first reconcile, with its status write answered; the status written, and the cluster
/// as it leaves it.
async fn first_reconcile(tenant: Tenant, policies: Vec<IMPolicy>) -> (Value, Cluster) {
    let expected = objects(&tenant, &policies);
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let status = written.clone();
    let made = Arc::new(std::sync::Mutex::new(Cluster::settled()));
    let cluster = made.clone();
    let (result, _) = run(tenant.clone(), |mut server| async move {
        let seen = add_finalizer(&mut server, &tenant).await;
        assert_eq!(
            seen.body["metadata"]["finalizers"],
            json!(["imgate.io/drain"])
        );
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        let seen = serve_objects(&mut server, &expected, &Cluster::default()).await;
        for created in seen.iter().filter(|s| s.method == Method::POST) {
            let name = created.body["metadata"]["name"].as_str().expect("a name");
            let annotations = created.body["metadata"]["annotations"].clone();
            let mut cluster = cluster.lock().expect("not poisoned");
            cluster.annotations.insert(name.to_owned(), annotations);
        }
        let seen = tenant_status(&mut server).await;
        *status.lock().expect("not poisoned") = seen.body;
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
    let written = written.lock().expect("not poisoned")["status"].clone();
    let cluster = std::mem::take(&mut *made.lock().expect("not poisoned"));
    (written, cluster)
}

#[tokio::test]
async fn create_makes_every_object_with_new_keys_and_reports_status() {
    let (tenant, policies) = harbor();
    let expected = objects(&tenant, &policies);
    let (result, ctx) = run(tenant.clone(), |mut server| async move {
        let seen = add_finalizer(&mut server, &tenant).await;
        assert_eq!(
            seen.body["metadata"]["resourceVersion"], "1",
            "the finalizer is added on condition"
        );

        let listed = serve_policies(&mut server, &policies).await;
        assert!(
            listed
                .uri
                .contains("fieldSelector=spec.tenantRef%3Dharbor-dental"),
            "{}",
            listed.uri
        );
        let accepted = policy_status(&mut server).await;
        assert_eq!(
            condition(&accepted.body["status"], "Accepted")["status"],
            "True"
        );
        assert_eq!(accepted.body["status"]["observedGeneration"], 1);

        let seen = serve_objects(&mut server, &expected, &Cluster::default()).await;
        for applied in seen.iter().filter(|s| s.method == Method::PATCH) {
            assert!(
                applied.uri.contains("fieldManager=imgate-operator")
                    && applied.uri.contains("force=true"),
                "{}",
                applied.uri
            );
        }
        let created: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST).collect();
        assert_eq!(
            created.len(),
            4,
            "the tunnel CA, the interception CA, the enrollment token and the connectors' certificate record"
        );
        let (authorities, rest) = created.split_at(2);
        let (enrollment, record) = rest.split_at(1);
        assert_eq!(
            record[0].body["metadata"]["name"],
            crate::names::GENERATIONS_SECRET
        );
        assert!(
            record[0].body["data"]
                .as_object()
                .is_none_or(serde_json::Map::is_empty),
            "the record starts empty: {}",
            record[0].body
        );
        let pin = authorities[0].body["metadata"]["annotations"][crate::enrollment::CA_PIN]
            .as_str()
            .expect("the tunnel CA's pin");
        let token = enrollment_token(enrollment[0]);
        assert_eq!(token.ca_pin, pin, "the token pins the tunnel CA just made");
        assert_eq!(token.connector, "connector-1");
        for secret in authorities {
            let data = secret.body["data"].as_object().expect("data");
            let pem = |key: &str| {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data[key].as_str().expect("base64"))
                    .expect("base64");
                String::from_utf8(bytes).expect("PEM")
            };
            let (cert, key) = if data.contains_key("ca.pem") {
                ("ca.pem", "ca.key")
            } else {
                ("tls.crt", "tls.key")
            };
            assert!(
                pem(cert).starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                pem(cert)
            );
            assert!(pem(key).contains("PRIVATE KEY-----"));
            assert_eq!(
                secret.body["metadata"]["ownerReferences"][0]["kind"],
                "Tenant"
            );
        }

        let status = tenant_status(&mut server).await;
        assert!(
            status.uri.contains("fieldManager=imgate-operator"),
            "{}",
            status.uri
        );
        let status = &status.body["status"];
        assert_eq!(status["tunnelEndpoint"], "203.0.113.7:4433");
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(condition(status, "Ready")["status"], "True");
        assert_eq!(condition(status, "PolicyApplied")["status"], "True");
        let enrollment = condition(status, "ConnectorEnrollment");
        assert_eq!(enrollment["reason"], "TokenAvailable");
        assert_eq!(
            status["enrollmentSecretRef"]["name"],
            "connector-enrollment"
        );
        let revision = PolicySet::build(TENANT, &policies)
            .expect("compiles")
            .revision;
        assert_eq!(status["policyRevision"], revision.as_str());
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
    assert!(
        ctx.metrics
            .render()
            .contains("imgate_operator_reconciles_total 1")
    );
}

#[tokio::test]
async fn a_steady_tenant_is_applied_again_but_its_status_is_not_rewritten() {
    let (tenant, policies) = harbor();
    let (status, cluster) = first_reconcile(tenant.clone(), policies.clone()).await;
    let mut steady = finalized(tenant);
    steady.status = Some(serde_json::from_value(status).expect("a TenantStatus"));
    let mut accepted = policies.clone();
    let policy_status = json!({"observedGeneration": 1, "rules": 2,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Compiled", "message": "2 content rules compiled",
                        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    accepted[0].status = Some(serde_json::from_value(policy_status).expect("an IMPolicyStatus"));
    let expected = objects(&steady, &accepted);
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &accepted).await;
        let seen = serve_objects(&mut server, &expected, &cluster).await;
        assert!(
            seen.iter().all(|s| s.method != Method::POST),
            "no Secret is written again"
        );
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn an_updated_policy_is_delivered_with_its_new_revision() {
    let (tenant, policies) = harbor();
    let (status, cluster) = first_reconcile(tenant.clone(), policies.clone()).await;
    let old_revision = status["policyRevision"].clone();
    let mut steady = finalized(tenant);
    steady.status = Some(serde_json::from_value(status).expect("a TenantStatus"));
    let mut changed = policies.clone();
    changed[0].spec.content.pop();
    changed[0].metadata.generation = Some(2);
    let expected = objects(&steady, &changed);
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &changed).await;
        let accepted = policy_status(&mut server).await;
        assert_eq!(accepted.body["status"]["observedGeneration"], 2);
        let seen = serve_objects(&mut server, &expected, &cluster).await;
        let config_map = seen
            .iter()
            .find(|s| s.uri.contains("/configmaps/policy"))
            .expect("the policy ConfigMap");
        let revision = &config_map.body["metadata"]["annotations"]["imgate.io/policy-revision"];
        assert_ne!(revision, &old_revision);
        let status = tenant_status(&mut server).await;
        assert_eq!(&status.body["status"]["policyRevision"], revision);
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn drift_is_undone_by_a_forced_apply_of_the_desired_object() {
    let (tenant, policies) = harbor();
    let mut drifted = StatefulSet::default();
    drifted.metadata.name = Some("dataplane".into());
    drifted.metadata.labels =
        Some([(crate::names::TENANT_LABEL.to_owned(), TENANT.to_owned())].into());
    assert_eq!(
        tenant_of(&drifted).map(|r| r.name),
        Some(TENANT.to_owned()),
        "a changed StatefulSet triggers its tenant"
    );
    assert_eq!(
        tenant_of_policy(&policies[0]).name,
        TENANT,
        "a changed policy triggers its tenant"
    );

    let steady = finalized(tenant);
    let expected = objects(&steady, &policies);
    let desired_image = expected
        .iter()
        .find_map(|o| match o {
            Object::StatefulSet(s) => Some(
                s.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                    .image
                    .clone(),
            ),
            _ => None,
        })
        .flatten()
        .expect("an image");
    let cluster = Cluster::settled();
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        let seen = serve_objects(&mut server, &expected, &cluster).await;
        let applied = seen
            .iter()
            .find(|s| s.uri.contains("/statefulsets/dataplane"))
            .expect("the StatefulSet");
        assert!(
            applied.uri.contains("force=true"),
            "the operator takes its fields back: {}",
            applied.uri
        );
        assert_eq!(
            applied.body["spec"]["template"]["spec"]["containers"][0]["image"],
            desired_image.as_str()
        );
        assert!(
            applied.body["spec"].get("replicas").is_none(),
            "replicas stay with the autoscaler"
        );
        tenant_status(&mut server).await;
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_secret_another_replica_created_first_is_left_alone() {
    let (tenant, policies) = harbor();
    let steady = finalized(tenant);
    let expected = objects(&steady, &policies);
    let theirs = Cluster::settled();
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        for object in &expected {
            let url = path(object);
            if let Object::Namespace(namespace) = object {
                serve_namespace_read(&mut server, namespace, &theirs).await;
            }
            let Some(secret) = object.generated_secret() else {
                server.expect(Method::PATCH, &url, Reply::Echo).await;
                continue;
            };
            server
                .expect(
                    Method::GET,
                    &url,
                    Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
                )
                .await;
            let collection = url.rsplit_once('/').expect("a name").0.to_owned();
            let ours = server
                .expect(
                    Method::POST,
                    &collection,
                    Reply::Fail(StatusCode::CONFLICT, "AlreadyExists"),
                )
                .await;
            if ours.body["data"]["token"].is_string() {
                let token = enrollment_token(&ours);
                assert_eq!(
                    token.ca_pin, STANDING_PIN,
                    "the token pins the CA the other replica made, which stands"
                );
            }
            server
                .expect(
                    Method::GET,
                    &url,
                    Reply::Json(StatusCode::OK, existing(secret, &theirs)),
                )
                .await;
        }
        let status = tenant_status(&mut server).await;
        assert_eq!(
            condition(&status.body["status"], "TunnelReady")["reason"],
            "AwaitingLoadBalancer"
        );
    })
    .await;
    assert_eq!(
        result.expect("converged"),
        Action::requeue(crate::reconcile::tenant::NOT_READY_POLL),
        "no dataplane is ready yet: looked at again soon"
    );
}

#[tokio::test]
async fn dataplanes_that_are_not_ready_say_what_their_pods_wait_for() {
    let (tenant, policies) = harbor();
    let steady = finalized(tenant);
    let expected = objects(&steady, &policies);
    let starting = Cluster {
        ready: 0,
        ..Cluster::settled()
    };
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        serve_objects(&mut server, &expected, &starting).await;
        let waiting = json!({"metadata": {"name": "dataplane-0"}, "status": {"containerStatuses": [{
            "name": "dataplane", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "secret \"harbor-dental-s3\" not found"}}}]}});
        let listed = server
            .expect(
                Method::GET,
                "/api/v1/namespaces/imgate-harbor-dental/pods",
                Reply::Json(StatusCode::OK, list("Pod", vec![waiting])),
            )
            .await;
        assert!(
            listed.uri.contains("labelSelector=app.kubernetes.io%2Fcomponent%3Ddataplane"),
            "{}",
            listed.uri
        );
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(ready["reason"], "NoDataplaneReady");
        assert_eq!(
            ready["message"],
            "0 of 0 dataplanes ready; dataplane-0: container dataplane waiting: CreateContainerConfigError: secret \"harbor-dental-s3\" not found"
        );
    })
    .await;
    assert_eq!(
        result.expect("converged"),
        Action::requeue(crate::reconcile::tenant::NOT_READY_POLL),
        "pods are not watched: a Tenant without a ready dataplane is looked at again soon"
    );
}

#[tokio::test]
async fn a_conflict_on_the_finalizer_fails_the_reconcile_and_retries_soon() {
    let (tenant, _) = harbor();
    let (result, ctx) = run(tenant.clone(), |mut server| async move {
        server
            .expect(
                Method::PATCH,
                &tenant_path(),
                Reply::Fail(StatusCode::CONFLICT, "Conflict"),
            )
            .await;
    })
    .await;
    let error = result.expect_err("a conflict fails the reconcile");
    assert_eq!(error.metric_label(), "finalizer");
    assert_eq!(
        error_policy(Arc::new(tenant), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert!(
        ctx.metrics
            .render()
            .contains("imgate_operator_reconcile_errors_total{error=\"finalizer\"} 1")
    );
}

#[tokio::test]
async fn an_invalid_policy_is_reported_and_the_last_good_set_kept() {
    let (tenant, policies) = harbor();
    let (status, cluster) = first_reconcile(tenant.clone(), policies.clone()).await;
    let good_revision = status["policyRevision"].clone();
    let mut steady = finalized(tenant);
    steady.status = Some(serde_json::from_value(status).expect("a TenantStatus"));
    // The Tenant handed to the reconcile lags: its status still shows an older revision.
    if let Some(status) = steady.status.as_mut() {
        status.policy_revision = Some("older0".into());
    }
    let bad = vec![broken(policies[0].clone())];
    let expected = desired(&steady, None, &Settings::default());
    assert!(expected.iter().all(|o| o.kind() != "ConfigMap"));
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &bad).await;
        let rejected = policy_status(&mut server).await;
        let accepted = condition(&rejected.body["status"], "Accepted");
        assert_eq!(
            (accepted["status"].as_str(), accepted["reason"].as_str()),
            (Some("False"), Some("Invalid"))
        );
        let message = accepted["message"].as_str().expect("a message");
        assert!(message.contains("spec.content[0].match.regex"), "{message}");
        assert_eq!(rejected.body["status"]["observedGeneration"], 2);

        let event = server
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/harbor-dental/events",
                Reply::Echo,
            )
            .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "InvalidPolicy");
        assert_eq!(event.body["regarding"]["name"], "basics");
        assert!(
            event.body["note"]
                .as_str()
                .expect("a note")
                .contains("spec.content[0].match.regex")
        );
        server
            .expect(
                Method::GET,
                "/api/v1/namespaces/imgate-harbor-dental/configmaps/policy",
                Reply::Json(
                    StatusCode::OK,
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "policy", "namespace": "imgate-harbor-dental",
                            "annotations": {"imgate.io/policy-revision": good_revision}}}),
                ),
            )
            .await;

        let seen = serve_objects(&mut server, &expected, &cluster).await;
        assert!(
            seen.iter().all(|s| !s.uri.contains("/configmaps/")),
            "the last good ConfigMap is not touched"
        );
        let status = tenant_status(&mut server).await;
        let status = &status.body["status"];
        assert_eq!(
            status["policyRevision"], good_revision,
            "the revision the ConfigMap carries, not the lagging Tenant's"
        );
        assert_eq!(
            condition(status, "PolicyApplied")["reason"],
            "InvalidPolicy"
        );
        assert_eq!(condition(status, "Ready")["status"], "False");
    })
    .await;
    assert_eq!(result.expect("converged"), Action::requeue(RESYNC));
}

fn deleting(tenant: Tenant) -> Tenant {
    let mut tenant = finalized(tenant);
    tenant.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("a time"),
        ));
    tenant
}

const NS: &str = "/apis/autoscaling/v2/namespaces/imgate-harbor-dental";

async fn scale_down(server: &mut ApiServer, pods: usize) {
    server
        .expect(
            Method::DELETE,
            &format!("{NS}/horizontalpodautoscalers/dataplane"),
            Reply::Json(
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ),
        )
        .await;
    let scaled = server
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/imgate-harbor-dental/statefulsets/dataplane",
            Reply::Echo,
        )
        .await;
    assert_eq!(scaled.body, json!({"spec": {"replicas": 0}}));
    let items: Vec<Value> = (0..pods)
        .map(|i| json!({"metadata": {"name": format!("dataplane-{i}")}}))
        .collect();
    let listed = server
        .expect(Method::GET, "/api/v1/namespaces/imgate-harbor-dental/pods", Reply::Json(StatusCode::OK,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items})))
        .await;
    assert!(listed.uri.contains("labelSelector="), "{}", listed.uri);
}

#[tokio::test]
async fn deletion_waits_for_the_dataplanes_to_flush_and_stop() {
    let (tenant, _) = harbor();
    let (result, _) = run(deleting(tenant), |mut server| async move {
        scale_down(&mut server, 2).await;
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(ready["reason"], "Draining");
        assert!(
            ready["message"]
                .as_str()
                .expect("message")
                .contains("2 dataplanes")
        );
    })
    .await;
    assert_eq!(
        result.expect("draining"),
        Action::requeue(DRAIN_POLL),
        "the finalizer stays"
    );
}

#[tokio::test]
async fn deletion_lets_go_once_no_dataplane_is_left() {
    let (tenant, _) = harbor();
    let mut tenant = deleting(tenant);
    tenant.metadata.finalizers = Some(vec![
        "example.com/other".into(),
        super::super::FINALIZER.into(),
    ]);
    let (result, _) = run(tenant, |mut server| async move {
        scale_down(&mut server, 0).await;
        let released = server
            .expect(Method::PATCH, &tenant_path(), stored(&harbor().0))
            .await;
        assert_eq!(
            released.body["metadata"]["finalizers"],
            json!(["example.com/other"]),
            "only its own finalizer goes"
        );
        assert_eq!(released.body["metadata"]["resourceVersion"], "1");
    })
    .await;
    assert_eq!(result.expect("released"), Action::await_change());
}

/// The API server's words for the StatefulSet that every cluster refused before its spread
/// constraints carried a label selector.
const INVALID: &str = "StatefulSet.apps \"dataplane\" is invalid: spec.template.spec.topologySpreadConstraints[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set";

/// Serves the writes of `objects` up to the StatefulSet, which is refused with `refusal`.
async fn refuse_stateful_set(server: &mut ApiServer, objects: &[Object], refusal: Reply) {
    let at = objects
        .iter()
        .position(|o| o.kind() == "StatefulSet")
        .expect("a StatefulSet");
    serve_objects(server, &objects[..at], &Cluster::settled()).await;
    server
        .expect(Method::PATCH, &path(&objects[at]), refusal)
        .await;
}

#[tokio::test]
async fn an_apply_the_api_server_refuses_shows_on_the_tenant_with_its_message() {
    let (tenant, policies) = harbor();
    let steady = finalized(tenant.clone());
    let expected = objects(&steady, &policies);
    let (result, ctx) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        let invalid = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": INVALID, "reason": "Invalid", "code": 422});
        refuse_stateful_set(
            &mut server,
            &expected,
            Reply::Json(StatusCode::UNPROCESSABLE_ENTITY, invalid),
        )
        .await;
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("ApplyRefused"))
        );
        let message = ready["message"].as_str().expect("a message");
        assert!(
            message.contains("apply StatefulSet/dataplane (422 Invalid)"),
            "{message}"
        );
        assert!(message.contains(INVALID), "{message}");
        assert_eq!(status.body["status"]["observedGeneration"], 1);
        let event = server
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                Reply::Echo,
            )
            .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "ApplyRefused");
        assert_eq!(event.body["regarding"]["kind"], "Tenant");
        assert_eq!(event.body["regarding"]["name"], TENANT);
        assert!(
            event.body["note"]
                .as_str()
                .expect("a note")
                .contains("matchLabelKeys"),
            "{}",
            event.body
        );
    })
    .await;
    let error = result.expect_err("a refused apply fails the reconcile");
    assert_eq!(error.metric_label(), "apply");
    assert!(
        ctx.metrics
            .render()
            .contains("imgate_operator_reconcile_errors_total{error=\"apply\"} 1")
    );
}

#[tokio::test]
async fn a_refusal_already_shown_is_not_announced_again() {
    let (tenant, policies) = harbor();
    let mut steady = finalized(tenant);
    let message = format!(
        "the API server refused to apply StatefulSet/dataplane (422 Invalid): {INVALID}; nothing after it was applied, and the operator retries it"
    );
    steady.status = Some(
        serde_json::from_value(json!({"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "False", "reason": "ApplyRefused", "message": message,
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "enrollmentSecretRef": {"name": "connector-enrollment"}}))
        .expect("a TenantStatus"),
    );
    let expected = objects(&steady, &policies);
    let result = run_to_the_end(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        let invalid = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": INVALID, "reason": "Invalid", "code": 422});
        refuse_stateful_set(
            &mut server,
            &expected,
            Reply::Json(StatusCode::UNPROCESSABLE_ENTITY, invalid),
        )
        .await;
        // The status already says it: no status write and no Event follow.
        server
    })
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_forbidden_write_shows_on_the_tenant_and_a_conflict_does_not() {
    let (tenant, policies) = harbor();
    let steady = finalized(tenant.clone());
    let (result, ctx) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        server
            .expect(
                Method::GET,
                "/api/v1/namespaces/imgate-harbor-dental",
                Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
            )
            .await;
        server
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/imgate-harbor-dental",
                Reply::Fail(StatusCode::FORBIDDEN, "Forbidden"),
            )
            .await;
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(ready["reason"], "ApplyRefused");
        assert!(
            ready["message"]
                .as_str()
                .expect("a message")
                .contains("apply Namespace/imgate-harbor-dental (403 Forbidden)"),
            "{ready}"
        );
        server
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                Reply::Echo,
            )
            .await;
    })
    .await;
    let error = result.expect_err("a refused apply fails the reconcile");
    assert!(
        error.to_string().contains("Namespace/imgate-harbor-dental"),
        "{error}"
    );
    let tenant = Arc::new(tenant);
    let delays: Vec<Action> = (0..7)
        .map(|_| error_policy(tenant.clone(), &error, ctx.clone()))
        .collect();
    let seconds = [15, 30, 60, 120, 240, 300, 300];
    assert_eq!(
        delays,
        seconds.map(|s| Action::requeue(Duration::from_secs(s))),
        "each failure in a row doubles the wait, up to five minutes"
    );
    let conflict = Error::Api {
        action: "apply",
        object: "StatefulSet/dataplane".into(),
        source: kube::Error::Api(Box::new(
            kube::core::Status::failure("Conflict", "Conflict").with_code(409),
        )),
    };
    assert_eq!(crate::reconcile::refusal::message(&conflict), None);
}

#[tokio::test]
async fn dataplanes_not_ready_past_the_deadline_are_announced_once() {
    let (tenant, policies) = harbor();
    let mut steady = finalized(tenant);
    steady.status = Some(
        serde_json::from_value(json!({"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "False", "reason": "NoDataplaneReady",
            "message": "0 of 1 dataplanes ready; the pods are starting",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}, {
            "type": "DataplanesReady", "status": "False", "reason": "NoneReady",
            "message": "0 of 1 dataplanes ready; the pods are starting",
            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
        .expect("a TenantStatus"),
    );
    let expected = objects(&steady, &policies);
    let starting = Cluster {
        ready: 0,
        ..Cluster::settled()
    };
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        serve_objects(&mut server, &expected, &starting).await;
        let pending = json!({"metadata": {"name": "dataplane-0"}, "status": {"conditions": [{
            "type": "PodScheduled", "status": "False",
            "message": "0/3 nodes are available: 3 Insufficient memory."}]}});
        server
            .expect(
                Method::GET,
                "/api/v1/namespaces/imgate-harbor-dental/pods",
                Reply::Json(StatusCode::OK, list("Pod", vec![pending])),
            )
            .await;
        let event = server
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                Reply::Echo,
            )
            .await;
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["reason"], "ProgressDeadlineExceeded");
        assert!(
            event.body["note"]
                .as_str()
                .is_some_and(|n| n.contains("Insufficient memory")),
            "{}",
            event.body
        );
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(ready["reason"], "ProgressDeadlineExceeded");
        assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:00:00Z");
    })
    .await;
    assert!(result.is_ok());
}

/// Answers the read of the tenant's namespace with one an earlier Tenant of the name left.
async fn earlier_firms_namespace(server: &mut ApiServer) {
    server
        .expect(
            Method::GET,
            "/api/v1/namespaces/imgate-harbor-dental",
            Reply::Json(
                StatusCode::OK,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "imgate-harbor-dental",
                        "annotations": {"imgate.io/tenant-uid": "uid-of-the-earlier-firm"}}}),
            ),
        )
        .await;
}

#[tokio::test]
async fn a_namespace_left_by_an_earlier_tenant_of_the_name_is_not_taken_unasked() {
    let (tenant, policies) = harbor();
    let steady = finalized(tenant);
    let result = run_to_the_end(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        earlier_firms_namespace(&mut server).await;
        let status = tenant_status(&mut server).await;
        let ready = condition(&status.body["status"], "Ready");
        assert_eq!(ready["reason"], "NamespaceOfEarlierTenant");
        let message = ready["message"].as_str().expect("a message");
        assert!(
            message.contains("uid uid-of-the-earlier-firm")
                && message.contains("imgate.io/adopt-namespace=uid-of-the-earlier-firm"),
            "{message}"
        );
        let event = server
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                Reply::Echo,
            )
            .await;
        assert_eq!(event.body["reason"], "NamespaceOfEarlierTenant");
        // Nothing of the tenant is applied.
        server
    })
    .await;
    let error = result.expect_err("held");
    assert_eq!(error.metric_label(), "namespace");
}

#[tokio::test]
async fn a_tenant_that_adopts_the_earlier_namespace_takes_it() {
    let (mut tenant, policies) = harbor();
    tenant.metadata.annotations = Some(
        [(
            crate::names::ADOPT_NAMESPACE.to_owned(),
            "uid-of-the-earlier-firm".to_owned(),
        )]
        .into(),
    );
    let steady = finalized(tenant);
    let expected = objects(&steady, &policies);
    let (result, _) = run(steady, |mut server| async move {
        serve_policies(&mut server, &policies).await;
        policy_status(&mut server).await;
        earlier_firms_namespace(&mut server).await;
        let applied = server
            .expect(Method::PATCH, &path(&expected[0]), Reply::Echo)
            .await;
        assert_eq!(
            applied.body["metadata"]["annotations"]["imgate.io/tenant-uid"],
            "0e6f5c1a-0000-4000-8000-000000000001",
            "the namespace is this Tenant's from now on"
        );
    })
    .await;
    assert!(result.is_err(), "the script ended after the namespace");
}
