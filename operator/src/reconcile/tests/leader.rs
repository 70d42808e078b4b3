//! Leader election scenarios: an absent, a held, a lapsed and a contested Lease.

use super::*;
use crate::reconcile::leader::LeaseLock;
use k8s_openapi::jiff::Timestamp;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/imgate-system/leases";

fn lock(client: Client) -> LeaseLock {
    LeaseLock::new(
        client,
        "imgate-system",
        "imgate-operator",
        "replica-a",
        Duration::from_secs(15),
    )
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("a time")
}

fn lease(holder: &str, renewed: i64, transitions: i32) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "imgate-operator", "namespace": "imgate-system", "resourceVersion": "7"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": at(renewed).to_string(), "leaseTransitions": transitions}})
}

/// Answers the read of the Lease with `lease`.
async fn held(server: &mut ApiServer, lease: Value) {
    let path = format!("{LEASES}/imgate-operator");
    server
        .expect(Method::GET, &path, Reply::Json(StatusCode::OK, lease))
        .await;
}

async fn attempt(now: i64, script: impl AsyncFnOnce(&mut ApiServer)) -> bool {
    let (client, mut server) = super::super::fixtures::pair();
    let lock = lock(client);
    let task = tokio::spawn(async move { lock.try_acquire(at(now)).await });
    script(&mut server).await;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("no unscripted request")
        .expect("no panic")
        .expect("no API error")
}

#[tokio::test]
async fn an_absent_lease_is_created_and_held() {
    let leading = attempt(1000, async |server| {
        server
            .expect(
                Method::GET,
                &format!("{LEASES}/imgate-operator"),
                Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
            )
            .await;
        let created = server.expect(Method::POST, LEASES, Reply::Echo).await;
        assert_eq!(created.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(created.body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(created.body["spec"]["leaseTransitions"], 0);
    })
    .await;
    assert!(leading);
}

#[tokio::test]
async fn a_lease_another_replica_renews_is_left_alone() {
    let leading = attempt(1010, async |server| {
        held(server, lease("replica-b", 1000, 3)).await;
    })
    .await;
    assert!(!leading, "renewed 10 s ago, for 15 s: still replica-b's");
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_on_condition() {
    let leading = attempt(1016, async |server| {
        held(server, lease("replica-b", 1000, 3)).await;
        let taken = server
            .expect(
                Method::PUT,
                &format!("{LEASES}/imgate-operator"),
                Reply::Echo,
            )
            .await;
        assert_eq!(
            taken.body["metadata"]["resourceVersion"], "7",
            "written on condition"
        );
        assert_eq!(taken.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(taken.body["spec"]["leaseTransitions"], 4);
    })
    .await;
    assert!(leading);
}

#[tokio::test]
async fn its_own_lease_is_renewed_without_a_transition() {
    let leading = attempt(1005, async |server| {
        held(server, lease("replica-a", 1000, 3)).await;
        let renewed = server
            .expect(
                Method::PUT,
                &format!("{LEASES}/imgate-operator"),
                Reply::Echo,
            )
            .await;
        assert_eq!(renewed.body["spec"]["leaseTransitions"], 3);
        assert_eq!(
            renewed.body["spec"]["renewTime"],
            json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                at(1005)
            ))
        );
    })
    .await;
    assert!(leading);
}

#[tokio::test]
async fn losing_the_race_for_a_lapsed_lease_means_following() {
    let leading = attempt(1016, async |server| {
        held(server, lease("replica-b", 1000, 3)).await;
        server
            .expect(
                Method::PUT,
                &format!("{LEASES}/imgate-operator"),
                Reply::Fail(StatusCode::CONFLICT, "Conflict"),
            )
            .await;
    })
    .await;
    assert!(!leading, "replica-c wrote first");
}
