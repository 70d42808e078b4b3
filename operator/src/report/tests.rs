//! Reports: when a dataplane writes, what its Lease holds (against the scripted API server,
//! under the dataplanes' chart RBAC), how the operator summarises Leases, and when it writes
//! a Tenant's report fields (under the operator's RBAC).

use std::time::{Duration, Instant};

use chrono::Utc;
use http::{Method, StatusCode};
use imgate_crds::{Tenant, TenantStatus};
use imgate_dataplane::archive::ShipHealth;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use super::gather::Gatherer;
use super::lease::{LeaseReporter, due};
use super::summary::{ARCHIVE_REACHABLE, POLICY_ENFORCED, current, summarize};
use super::*;
use crate::reconcile::chart_rbac::Subject;
use crate::reconcile::conditions::find;
use crate::reconcile::fixtures::{Reply, pair, pair_as};
use crate::reconcile::tests::context;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/imgate-acme/leases";

fn report(revision: &str, sessions: u64, connectors: &[&str], archive: ShipHealth) -> Report {
    Report {
        policy_revision: Some(revision.into()),
        active_sessions: sessions,
        connectors: connectors.iter().map(|c| c.to_string()).collect(),
        archive,
        alerts: None,
    }
}

fn shipped() -> ShipHealth {
    ShipHealth::Shipped { at: Utc::now() }
}

fn reporter(client: kube::Client) -> LeaseReporter {
    LeaseReporter::new(
        Api::default_namespaced(client),
        "dataplane-0",
        Some("pod-uid-0".into()),
        "acme",
    )
}

/// The Lease of `pod` carrying `report`, renewed `age` ago.
fn lease(pod: &str, report: &Report, age: Duration) -> Lease {
    let renewed = Timestamp::now() - SignedDuration::try_from(age).expect("a duration");
    let mut lease = super::lease::lease(pod, None, "acme", report, renewed);
    lease.metadata.namespace = Some("imgate-acme".into());
    lease
}

#[test]
fn a_dataplane_writes_at_once_what_matters_and_counts_with_its_heartbeat() {
    let start = Instant::now();
    let first = report("aaa", 3, &["site-1"], ShipHealth::NothingShipped);
    assert!(due(None, &first, start), "the first report is due");
    let written = (first.clone(), start);
    let soon = start + Duration::from_secs(2);
    assert!(!due(Some(&written), &first, soon), "nothing new");
    let busier = report("aaa", 40, &["site-1"], ShipHealth::NothingShipped);
    assert!(!due(Some(&written), &busier, soon), "counts wait");
    assert!(
        due(Some(&written), &busier, start + HEARTBEAT),
        "the heartbeat carries them"
    );
    for changed in [
        report("bbb", 3, &["site-1"], ShipHealth::NothingShipped),
        report("aaa", 3, &["site-1", "site-2"], ShipHealth::NothingShipped),
        report("aaa", 3, &["site-1"], shipped()),
    ] {
        assert!(
            due(Some(&written), &changed, soon),
            "{changed:?} is told at once"
        );
    }
    let later = (report("aaa", 3, &["site-1"], shipped()), start);
    let again = report("aaa", 3, &["site-1"], shipped());
    assert!(
        !due(Some(&later), &again, soon),
        "a later shipment is not news"
    );
}

#[tokio::test]
async fn the_lease_carries_the_report_renewal_and_owner_and_goes_on_stop() {
    let (client, mut server) = pair_as(Subject::Dataplane, "imgate-acme");
    let sent = report("aaa", 2, &["site-1"], ShipHealth::NothingShipped);
    let writing = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut reporter = reporter(client);
            let now = Instant::now();
            assert!(reporter.report(sent.clone(), now).await.expect("written"));
            assert!(
                !reporter.report(sent, now).await.expect("not due"),
                "no second write"
            );
            reporter.withdraw().await.expect("withdrawn");
        })
    };
    let applied = server
        .expect(Method::PATCH, &format!("{LEASES}/dataplane-0"), Reply::Echo)
        .await;
    assert!(
        applied.uri.contains("fieldManager=imgate-dataplane"),
        "{}",
        applied.uri
    );
    assert!(applied.uri.contains("force=true"), "{}", applied.uri);
    let body = &applied.body;
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["labels"]["imgate.io/tenant"], "acme");
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/component"],
        COMPONENT
    );
    assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "pod-uid-0");
    assert_eq!(body["spec"]["holderIdentity"], "dataplane-0");
    assert_eq!(body["spec"]["leaseDurationSeconds"], LEASE_SECONDS);
    assert!(body["spec"]["renewTime"].is_string());
    let carried: Report = serde_json::from_str(
        body["metadata"]["annotations"][REPORT]
            .as_str()
            .expect("the report"),
    )
    .expect("a report");
    assert_eq!(carried, sent);
    server
        .expect(
            Method::DELETE,
            &format!("{LEASES}/dataplane-0"),
            Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
        )
        .await;
    writing.await.expect("the reporter");
}

#[tokio::test]
async fn a_refused_write_is_an_error_and_is_tried_again() {
    let (client, mut server) = pair_as(Subject::Dataplane, "imgate-acme");
    let writing = tokio::spawn(async move {
        let mut reporter = reporter(client);
        let sent = report("aaa", 0, &[], ShipHealth::NothingShipped);
        let error = reporter
            .report(sent.clone(), Instant::now())
            .await
            .expect_err("refused");
        assert!(error.to_string().contains("dataplane-0"), "{error}");
        assert!(
            reporter
                .report(sent, Instant::now())
                .await
                .expect("written")
        );
    });
    let path = format!("{LEASES}/dataplane-0");
    server
        .expect(
            Method::PATCH,
            &path,
            Reply::Fail(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        )
        .await;
    server.expect(Method::PATCH, &path, Reply::Echo).await;
    writing.await.expect("the reporter");
}

#[test]
fn only_current_parsable_reports_count() {
    let fresh = lease(
        "dataplane-1",
        &report("aaa", 1, &[], shipped()),
        Duration::ZERO,
    );
    let expired = lease(
        "dataplane-0",
        &report("aaa", 1, &[], shipped()),
        Duration::from_secs(LEASE_SECONDS as u64 + 5),
    );
    let mut garbled = lease("dataplane-2", &Report::default(), Duration::ZERO);
    garbled
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert(REPORT.into(), "{not json".into());
    let reports = current(&[&expired, &garbled, &fresh], Timestamp::now());
    let pods: Vec<&str> = reports.iter().map(|(pod, _)| pod.as_str()).collect();
    assert_eq!(pods, ["dataplane-1"]);
}

fn now() -> Time {
    Time(Timestamp::now())
}

#[test]
fn the_summary_counts_distinct_connectors_and_all_sessions() {
    let reports = vec![
        (
            "dataplane-0".to_owned(),
            report("aaa", 3, &["site-1", "site-2"], shipped()),
        ),
        (
            "dataplane-1".to_owned(),
            report("bbb", 4, &["site-2"], ShipHealth::NothingShipped),
        ),
    ];
    let summary = summarize(&reports, Some("aaa"), &[], Some(4), &now());
    assert_eq!(summary.connectors, 2);
    assert_eq!(summary.active_sessions, 7);
    let revisions: Vec<_> = summary
        .dataplanes
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.policy_revision.as_deref(),
                d.archive.as_str(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [
            ("dataplane-0", Some("aaa"), "Shipped"),
            ("dataplane-1", Some("bbb"), "NothingShipped")
        ]
    );
    let archive = find(&summary.conditions, ARCHIVE_REACHABLE).expect("a condition");
    assert_eq!(
        (archive.status.as_str(), archive.reason.as_str()),
        ("True", "Shipping")
    );
    assert_eq!(archive.observed_generation, Some(4));
}

#[test]
fn policy_enforcement_names_the_dataplanes_behind_the_delivered_revision() {
    let of = |revisions: &[Option<&str>]| -> Vec<(String, Report)> {
        revisions
            .iter()
            .enumerate()
            .map(|(i, revision)| {
                let mut report = report("", 0, &[], shipped());
                report.policy_revision = revision.map(str::to_owned);
                (format!("dataplane-{i}"), report)
            })
            .collect()
    };
    let cases = [
        (of(&[]), Some("bbb"), "Unknown", "NoReports"),
        (of(&[Some("aaa")]), None, "Unknown", "NothingDelivered"),
        (
            of(&[Some("bbb"), Some("bbb")]),
            Some("bbb"),
            "True",
            "Enforced",
        ),
        (
            of(&[Some("bbb"), Some("aaa"), None]),
            Some("bbb"),
            "False",
            "NotEnforced",
        ),
    ];
    for (reports, delivered, status, reason) in cases {
        let summary = summarize(&reports, delivered, &[], Some(3), &now());
        let condition = find(&summary.conditions, POLICY_ENFORCED).expect("a condition");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            (status, reason),
            "{}",
            condition.message
        );
        assert_eq!(condition.observed_generation, Some(3));
        if status == "False" {
            assert_eq!(
                condition.message,
                "revision bbb is delivered, but dataplane-1 enforces aaa, dataplane-2 enforces none delivered yet; a dataplane that refused it says why in its log"
            );
        }
        if status == "True" {
            assert_eq!(
                condition.message,
                "every dataplane (2) enforces revision bbb"
            );
        }
    }
}

#[test]
fn archive_reachability_follows_the_worst_report() {
    let failing = ShipHealth::Failing {
        since: Utc::now(),
        error: "access denied to bucket acme-im".into(),
    };
    let cases = [
        (vec![], "Unknown", "NoReports"),
        (
            vec![ShipHealth::NothingShipped],
            "Unknown",
            "NothingShippedYet",
        ),
        (
            vec![shipped(), ShipHealth::NothingShipped],
            "True",
            "Shipping",
        ),
        (
            vec![
                ShipHealth::Reachable { at: Utc::now() },
                ShipHealth::NothingShipped,
            ],
            "True",
            "Reachable",
        ),
        (vec![shipped(), failing], "False", "ShippingFailing"),
    ];
    for (healths, status, reason) in cases {
        let reports: Vec<(String, Report)> = healths
            .into_iter()
            .enumerate()
            .map(|(i, h)| (format!("dataplane-{i}"), report("aaa", 0, &[], h)))
            .collect();
        let summary = summarize(&reports, Some("aaa"), &[], None, &now());
        let condition = find(&summary.conditions, ARCHIVE_REACHABLE).expect("a condition");
        assert_eq!(condition.type_, ARCHIVE_REACHABLE);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            (status, reason)
        );
        if status == "False" {
            assert!(
                condition
                    .message
                    .contains("dataplane-1: access denied to bucket acme-im"),
                "{}",
                condition.message
            );
        }
    }
}

fn tenant(status: Option<TenantStatus>) -> Tenant {
    let mut tenant = crate::examples::tenant("small-firm/tenant.yaml");
    tenant.metadata.name = Some("acme".into());
    tenant.metadata.generation = Some(2);
    tenant.status = status;
    tenant
}

fn stores(tenant: Tenant, leases: Vec<Lease>) -> (Store<Tenant>, Store<Lease>) {
    let (tenants, mut tenant_writer) = reflector::store();
    tenant_writer.apply_watcher_event(&watcher::Event::Apply(tenant));
    let (lease_store, mut lease_writer) = reflector::store();
    for lease in leases {
        lease_writer.apply_watcher_event(&watcher::Event::Apply(lease));
    }
    (tenants, lease_store)
}

#[tokio::test]
async fn the_operator_writes_report_fields_with_its_own_manager_and_only_when_they_change() {
    let sent = report("aaa", 5, &["site-1"], shipped());
    let (tenants, mut tenant_writer) = reflector::store();
    tenant_writer.apply_watcher_event(&watcher::Event::Apply(tenant(None)));
    let (leases, mut lease_writer) = reflector::store();
    lease_writer.apply_watcher_event(&watcher::Event::Apply(lease(
        "dataplane-0",
        &sent,
        Duration::ZERO,
    )));
    let (client, mut server) = pair();
    let writing = tokio::spawn(async move {
        let ctx = context(client);
        let mut gatherer = Gatherer::new(ctx.clone(), tenants, leases);
        assert_eq!(
            gatherer.redelivered(),
            ["acme".to_owned()].into(),
            "a Tenant not looked at yet is looked at"
        );
        let failed = gatherer.write(["acme".to_owned()].into()).await;
        assert!(failed.is_empty());
        let metrics = ctx.metrics.render();
        assert!(
            metrics.contains("imgate_operator_report_writes_total{outcome=\"written\"} 1"),
            "{metrics}"
        );
        let now = Instant::now();
        assert!(
            gatherer.wanted("acme", now).is_none(),
            "what was written is not written again"
        );
        assert!(
            gatherer.wanted("someone-else", now).is_none(),
            "no such Tenant"
        );
        let busier = report("aaa", 9, &["site-1"], shipped());
        lease_writer.apply_watcher_event(&watcher::Event::Apply(lease(
            "dataplane-0",
            &busier,
            Duration::ZERO,
        )));
        assert!(
            gatherer.wanted("acme", now).is_none(),
            "counts alone wait after a write"
        );
        assert!(
            gatherer.wanted("acme", now + COUNTS_EVERY).is_some(),
            "and go later"
        );
        let moved = report("bbb", 9, &["site-1"], shipped());
        lease_writer.apply_watcher_event(&watcher::Event::Apply(lease(
            "dataplane-0",
            &moved,
            Duration::ZERO,
        )));
        assert!(
            gatherer.wanted("acme", now).is_some(),
            "a new revision goes at once"
        );
        assert!(gatherer.redelivered().is_empty());
        let delivered = TenantStatus {
            policy_revision: Some("aaa".into()),
            ..TenantStatus::default()
        };
        tenant_writer.apply_watcher_event(&watcher::Event::Apply(tenant(Some(delivered))));
        assert_eq!(
            gatherer.redelivered(),
            ["acme".to_owned()].into(),
            "a newly delivered revision is looked at"
        );
    });
    let written = server
        .expect(
            Method::PATCH,
            "/apis/imgate.io/v1alpha1/tenants/acme/status",
            Reply::EchoOver(serde_json::to_value(tenant(None)).expect("JSON")),
        )
        .await;
    assert!(
        written.uri.contains("fieldManager=imgate-operator-reports"),
        "{}",
        written.uri
    );
    let status = &written.body["status"];
    assert_eq!(status["dataplanes"][0]["name"], "dataplane-0");
    assert_eq!(status["dataplanes"][0]["policyRevision"], "aaa");
    assert_eq!(status["connectors"], 1);
    assert_eq!(status["activeSessions"], 5);
    let conditions = status["conditions"].as_array().expect("conditions");
    let types: Vec<&serde_json::Value> = conditions.iter().map(|c| &c["type"]).collect();
    assert_eq!(
        types,
        [
            ARCHIVE_REACHABLE,
            POLICY_ENFORCED,
            super::summary::ALERTS_DELIVERED
        ],
        "only the reports' conditions: {status}"
    );
    assert!(
        status.get("observedGeneration").is_none(),
        "the reconcile's field: {status}"
    );
    writing.await.expect("the gatherer");
}

#[tokio::test]
async fn session_counts_alone_wait_while_news_goes_at_once() {
    let stored_report = report("aaa", 5, &["site-1"], shipped());
    let reports = vec![("dataplane-0".to_owned(), stored_report.clone())];
    let summary = summarize(&reports, Some("aaa"), &[], Some(2), &now());
    let status = TenantStatus {
        dataplanes: summary.dataplanes.clone(),
        connectors: Some(summary.connectors),
        active_sessions: Some(summary.active_sessions),
        conditions: summary.conditions.clone(),
        policy_revision: Some("aaa".into()),
        ..TenantStatus::default()
    };
    let (client, _server) = pair();
    let with = |report: &Report| {
        let (tenants, leases) = stores(
            tenant(Some(status.clone())),
            vec![lease("dataplane-0", report, Duration::ZERO)],
        );
        Gatherer::new(context(client.clone()), tenants, leases)
    };
    let now = Instant::now();
    assert!(
        with(&stored_report).wanted("acme", now).is_none(),
        "the status holds it already"
    );
    let busier = report("aaa", 9, &["site-1"], shipped());
    assert!(
        with(&busier).wanted("acme", now).is_some(),
        "counts are written when nothing was written lately"
    );
    let moved = report("bbb", 5, &["site-1"], shipped());
    let summary = with(&moved).wanted("acme", now).expect("news");
    assert_eq!(
        summary.dataplanes[0].policy_revision.as_deref(),
        Some("bbb")
    );
    let behind = find(&summary.conditions, POLICY_ENFORCED).expect("PolicyEnforced");
    assert_eq!(behind.reason, "NotEnforced", "{}", behind.message);
}

#[test]
fn alerts_delivered_names_each_failing_receiver_and_a_change_is_told_at_once() {
    use imgate_dataplane::alerts::runner::ReceiverHealth;
    let healthy = || {
        let mut report = report("aaa", 0, &[], shipped());
        report.alerts = Some(
            [
                ("siem", ReceiverHealth::default()),
                ("hook", ReceiverHealth::default()),
            ]
            .into_iter()
            .map(|(name, health)| (name.to_owned(), health))
            .collect(),
        );
        report
    };
    let mut failing = healthy();
    if let Some(alerts) = failing.alerts.as_mut() {
        alerts.insert(
            "siem".into(),
            ReceiverHealth {
                failing_since: Some(Utc::now()),
                error: Some("cannot connect: siem.example:6514: connection refused".into()),
                down: true,
            },
        );
    }
    let mut one_try_failed = healthy();
    if let Some(alerts) = one_try_failed.alerts.as_mut() {
        alerts.insert(
            "hook".into(),
            ReceiverHealth {
                failing_since: Some(Utc::now()),
                error: Some("no answer within 10s".into()),
                down: false,
            },
        );
    }
    assert!(
        !one_try_failed.differs_significantly(&healthy()),
        "one failed try is not news"
    );
    assert!(
        failing.differs_significantly(&healthy()),
        "a receiver failing is told at once"
    );
    let no_alerts = report("aaa", 0, &[], shipped());
    let cases = [
        (vec![], "Unknown", "NoReports"),
        (
            vec![("dataplane-0".to_owned(), no_alerts)],
            "Unknown",
            "NotConfigured",
        ),
        (
            vec![
                ("dataplane-0".to_owned(), healthy()),
                ("dataplane-1".to_owned(), one_try_failed),
            ],
            "True",
            "Delivering",
        ),
        (
            vec![
                ("dataplane-0".to_owned(), healthy()),
                ("dataplane-1".to_owned(), failing),
            ],
            "False",
            "ReceiverFailing",
        ),
    ];
    for (reports, status, reason) in cases {
        let summary = summarize(&reports, Some("aaa"), &[], Some(2), &now());
        let condition =
            find(&summary.conditions, super::summary::ALERTS_DELIVERED).expect("a condition");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            (status, reason),
            "{}",
            condition.message
        );
        if status == "False" {
            assert!(
                condition.message.contains(
                    "dataplane-1: siem: cannot connect: siem.example:6514: connection refused"
                ),
                "{}",
                condition.message
            );
        }
    }
}
