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

/// What the work of a leadership term reports: `true` when a term starts, `false` when its
/// work ends (wound down or dropped).
struct Terms(tokio::sync::mpsc::UnboundedReceiver<bool>);

impl Terms {
    async fn next(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(60), self.0.recv())
            .await
            .expect("the work reported within the script's time")
            .expect("the leader still runs")
    }
}

/// Sends `false` when dropped, however its term ended.
struct Ended(tokio::sync::mpsc::UnboundedSender<bool>);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(false);
    }
}

/// Runs `leader::run` for replica-a against a scripted server; the work of each term reports
/// to the returned [`Terms`] and runs until told to stop. Dropping the sender shuts it down.
fn leader_running(
    client: Client,
) -> (
    tokio::task::JoinHandle<Arc<crate::reconcile::Metrics>>,
    Terms,
    tokio::sync::oneshot::Sender<()>,
) {
    let (events, terms) = tokio::sync::mpsc::unbounded_channel();
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let metrics = Arc::new(crate::reconcile::Metrics::default());
        let lock = lock(client);
        crate::reconcile::leader::run(
            &lock,
            &metrics,
            async { signal.await.unwrap_or(()) },
            |stop| {
                let events = events.clone();
                async move {
                    let _ended = Ended(events.clone());
                    let _ = events.send(true);
                    stop.await;
                }
            },
        )
        .await;
        metrics
    });
    (task, Terms(terms), shutdown)
}

/// Answers replica-a's first attempt with its own lapsed Lease and its renewal, and waits for
/// the term's work to start.
async fn takes_its_lapsed_lease(server: &mut ApiServer, terms: &mut Terms) {
    held(server, lease("replica-a", 1_000, 0)).await;
    let path = format!("{LEASES}/imgate-operator");
    server.expect(Method::PUT, &path, Reply::Echo).await;
    assert!(terms.next().await, "leading: the work started");
}

fn unavailable() -> Reply {
    Reply::Fail(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
}

#[tokio::test(start_paused = true)]
async fn an_api_outage_longer_than_the_lease_stops_the_work_and_it_leads_again_in_process() {
    let (client, mut server) = super::super::fixtures::pair();
    let (task, mut terms, shutdown) = leader_running(client);
    let path = format!("{LEASES}/imgate-operator");
    server
        .expect(
            Method::GET,
            &path,
            Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
        )
        .await;
    server.expect(Method::POST, LEASES, Reply::Echo).await;
    assert!(terms.next().await, "leading: the work started");
    // The API server goes away: the renewals a third and two thirds of the way fail, and the
    // work is stopped before the Lease could lapse for another replica.
    server.expect(Method::GET, &path, unavailable()).await;
    server.expect(Method::GET, &path, unavailable()).await;
    assert!(
        !terms.next().await,
        "the term ended when it could not renew"
    );
    // The outage lasts beyond the Lease's duration; the replica keeps trying, in process.
    for _ in 0..4 {
        server.expect(Method::GET, &path, unavailable()).await;
    }
    // The API server is back, with the Lease as this replica left it, long lapsed.
    held(&mut server, lease("replica-a", 1_000, 0)).await;
    let renewed = server.expect(Method::PUT, &path, Reply::Echo).await;
    assert_eq!(renewed.body["spec"]["holderIdentity"], "replica-a");
    assert!(terms.next().await, "leading again, with no restart");
    // SIGTERM: the work winds down, then the Lease is released.
    drop(shutdown);
    assert!(!terms.next().await);
    held(&mut server, lease("replica-a", 1_000, 0)).await;
    let released = server.expect(Method::PUT, &path, Reply::Echo).await;
    assert!(
        released.body["spec"]["holderIdentity"].is_null(),
        "{}",
        released.body
    );
    let metrics = task
        .await
        .expect("the leader ended by itself, without a panic");
    assert!(
        metrics.render().contains("imgate_operator_leader 0"),
        "{}",
        metrics.render()
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_shutting_down_releases_the_lease_and_another_replica_takes_it_at_once() {
    let (client, mut server) = super::super::fixtures::pair();
    let (task, mut terms, shutdown) = leader_running(client);
    let path = format!("{LEASES}/imgate-operator");
    held(&mut server, lease("replica-b", 1_000, 2)).await;
    let taken = server.expect(Method::PUT, &path, Reply::Echo).await;
    assert_eq!(taken.body["spec"]["leaseTransitions"], 3);
    assert!(terms.next().await);
    let now = Timestamp::now().as_second();
    drop(shutdown);
    assert!(!terms.next().await, "the work wound down first");
    held(&mut server, lease("replica-a", now, 3)).await;
    let released = server.expect(Method::PUT, &path, Reply::Echo).await;
    assert_eq!(
        released.body["metadata"]["resourceVersion"], "7",
        "on condition"
    );
    assert!(released.body["spec"]["holderIdentity"].is_null());
    assert_eq!(released.body["spec"]["leaseDurationSeconds"], 1);
    task.await.expect("the leader ended");
    // Replica c finds the Lease released a moment ago and takes it without waiting.
    let mut released_lease = released.body.clone();
    released_lease["metadata"]["resourceVersion"] = "8".into();
    let leading = attempt(now, async |server| {
        held(server, released_lease).await;
        let taken = server.expect(Method::PUT, &path, Reply::Echo).await;
        assert_eq!(taken.body["spec"]["holderIdentity"], "replica-a");
    })
    .await;
    assert!(leading, "a released Lease is free at once");
}

#[tokio::test(start_paused = true)]
async fn a_lease_taken_by_another_replica_stops_the_work_at_once() {
    let (client, mut server) = super::super::fixtures::pair();
    let (task, mut terms, shutdown) = leader_running(client);
    takes_its_lapsed_lease(&mut server, &mut terms).await;
    let now = Timestamp::now().as_second();
    held(&mut server, lease("replica-b", now, 1)).await;
    assert!(
        !terms.next().await,
        "the term ended when another replica held the Lease"
    );
    held(&mut server, lease("replica-b", now, 1)).await;
    drop(shutdown);
    // A follower shutting down looks whether a take-over in flight made it the holder; it
    // did not, so nothing is written.
    held(&mut server, lease("replica-b", now, 1)).await;
    let follower = tokio::spawn(async move {
        let request = server.unscripted().await;
        assert_eq!(request, None, "a request beyond the script");
    });
    task.await
        .expect("a follower shuts down at once, with nothing to release");
    follower.await.expect("nothing more was asked");
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_fail_stops_two_thirds_of_a_lease_after_its_last_renewal_began() {
    let (client, mut server) = super::super::fixtures::pair();
    let (task, mut terms, shutdown) = leader_running(client);
    let path = format!("{LEASES}/imgate-operator");
    takes_its_lapsed_lease(&mut server, &mut terms).await;
    // The renewal a third of the way in begins now, and its answer is slow to come.
    held(&mut server, lease("replica-a", 1_000, 0)).await;
    let began = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.expect(Method::PUT, &path, Reply::Echo).await;
    // The next renewal hangs: no answer comes at all.
    let (hung, _answer) = tokio::time::timeout(Duration::from_secs(60), server.next_raw())
        .await
        .expect("the next renewal");
    assert!(hung.contains("GET"), "{hung}");
    assert!(!terms.next().await, "the term ended while the renewal hung");
    let stopped = began.elapsed();
    assert!(
        stopped <= Duration::from_secs(10),
        "stopped {stopped:?} after the last renewal began: a follower may take over 15 s after"
    );
    assert!(
        stopped >= Duration::from_secs(10) - Duration::from_millis(10),
        "{stopped:?}"
    );
    drop(shutdown);
    drop(server);
    task.await.expect("the leader ended");
}
