//! A Tenant's status, as a pure function of what the reconcile observed: the policy set's
//! outcome, the tunnel Service and the dataplanes' StatefulSet as the API server returned
//! them.
//!
//! Invariants: reconciles own every field but the dataplanes' reports ([`reconciled_part`]);
//! `Ready` is `True` only when the policy set is applied, the tunnel can be
//! reached and at least one dataplane is ready, and otherwise names the first thing missing
//! (for dataplanes, what their pods wait for, and after [`PROGRESS_DEADLINE`] that they are
//! stuck);
//! `policyRevision` is the revision in the policy ConfigMap, so an invalid set leaves it at
//! the last good one, as the API server has it (never as a lagging cache's Tenant has it);
//! kstatus (Flux) and Argo CD read `Ready` with `observedGeneration`.

use imgate_crds::TenantStatus;
use imgate_crds::tenant::SecretRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use super::conditions::{State, Wanted, find, merge};
use super::enrollment_status;
use crate::names;
use crate::settings::Settings;

/// What became of the tenant's policy set.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyOutcome {
    /// The set compiled; its ConfigMap carries `revision`.
    Applied {
        /// The revision delivered.
        revision: String,
        /// How many policies it holds.
        policies: usize,
    },
    /// The set does not compile; the ConfigMap keeps the last good set.
    Rejected {
        /// What is wrong, by policy and field.
        message: String,
        /// The revision the ConfigMap still carries, as the API server returned it (none
        /// when no set was ever delivered).
        kept: Option<String>,
    },
}

/// What a reconcile saw.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The Tenant's name.
    pub tenant: &'a str,
    /// The Tenant's generation.
    pub generation: Option<i64>,
    /// The policy set's outcome.
    pub policy: PolicyOutcome,
    /// The tunnel Service as the API server returned it.
    pub tunnel_service: &'a Value,
    /// The dataplanes' StatefulSet as the API server returned it.
    pub stateful_set: &'a Value,
    /// The enrollment Secret's metadata.
    pub enrollment: &'a ObjectMeta,
    /// The connector the Tenant wants the next token for.
    pub enroll_connector: &'a str,
    /// What the dataplane pods wait for, when none is ready ([`super::pods`]).
    pub waiting: Option<&'a str>,
}

/// How long a Tenant may be without a ready dataplane before its `Ready` condition says the
/// dataplanes are stuck (reason [`STALLED`]) rather than starting, as a Deployment's
/// `progressDeadlineSeconds` does by default.
pub const PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);
/// The `Ready` reason of a Tenant whose dataplanes have not become ready within
/// [`PROGRESS_DEADLINE`].
pub const STALLED: &str = "ProgressDeadlineExceeded";
/// The condition saying whether any dataplane is ready, and since when not.
pub const DATAPLANES_READY: &str = "DataplanesReady";

/// Where connectors reach the tunnel, and the `TunnelReady` condition.
fn tunnel(observed: &Observed<'_>, settings: &Settings) -> (Option<String>, Wanted) {
    let service = observed.tunnel_service;
    let named = settings
        .tunnel_domain
        .as_ref()
        .map(|domain| format!("{}.{domain}", observed.tenant));
    let condition = |state, reason, message| Wanted::new("TunnelReady", state, reason, message);
    if service["spec"]["type"] == "NodePort" {
        let Some(port) = service["spec"]["ports"][0]["nodePort"].as_i64() else {
            return (
                None,
                condition(
                    State::False,
                    "AwaitingNodePort",
                    "the tunnel Service has no node port yet".into(),
                ),
            );
        };
        let endpoint = named.map(|host| format!("{host}:{port}"));
        let message = format!("connectors dial any node's address, UDP port {port}");
        return (endpoint, condition(State::True, "NodePort", message));
    }
    let ingress = &service["status"]["loadBalancer"]["ingress"][0];
    let Some(address) = ingress["hostname"].as_str().or(ingress["ip"].as_str()) else {
        return (
            None,
            condition(
                State::False,
                "AwaitingLoadBalancer",
                "the tunnel Service has no load-balancer address yet; check the cloud's load-balancer controller if this lasts".into(),
            ),
        );
    };
    let port = settings.tunnel_port;
    let message = match &named {
        Some(host) => {
            format!("connectors dial {host}:{port} (UDP); point {host} at {address}")
        }
        None => format!("connectors dial {address}:{port} (UDP)"),
    };
    let endpoint = format!("{}:{port}", named.as_deref().unwrap_or(address));
    (
        Some(endpoint),
        condition(State::True, "LoadBalancerReady", message),
    )
}

fn policy_applied(outcome: &PolicyOutcome) -> Wanted {
    match outcome {
        PolicyOutcome::Applied { revision, policies } => Wanted::new(
            "PolicyApplied",
            State::True,
            "Compiled",
            format!("revision {revision} ({policies} policies) delivered to the dataplanes"),
        ),
        PolicyOutcome::Rejected { message, .. } => Wanted::new(
            "PolicyApplied",
            State::False,
            "InvalidPolicy",
            format!("the dataplanes keep enforcing the last good policy set: {message}"),
        ),
    }
}

/// The dataplanes' readiness, from the StatefulSet's status: ready and running.
pub fn dataplanes(stateful_set: &Value) -> (i64, i64) {
    let status = &stateful_set["status"];
    (
        status["readyReplicas"].as_i64().unwrap_or(0),
        status["replicas"].as_i64().unwrap_or(0),
    )
}

/// The Tenant's status after a reconcile that saw `observed`, given the `previous` status.
pub fn tenant_status(
    observed: &Observed<'_>,
    previous: &TenantStatus,
    settings: &Settings,
    now: &Time,
) -> TenantStatus {
    let (endpoint, tunnel_ready) = tunnel(observed, settings);
    let policy = policy_applied(&observed.policy);
    let (ready, running) = dataplanes(observed.stateful_set);
    let dataplanes = if ready > 0 {
        Wanted::new(
            DATAPLANES_READY,
            State::True,
            "Ready",
            format!("{ready} of {running} dataplanes ready"),
        )
    } else {
        let why = observed.waiting.unwrap_or("the pods are starting");
        Wanted::new(
            DATAPLANES_READY,
            State::False,
            "NoneReady",
            format!("0 of {running} dataplanes ready; {why}"),
        )
    };
    // Measured from when the dataplanes stopped being ready, not from when `Ready` did
    // (which may have been for another reason).
    let stalled = ready == 0
        && find(&previous.conditions, DATAPLANES_READY)
            .filter(|c| c.status == "False")
            .is_some_and(|c| {
                now.0.duration_since(c.last_transition_time.0).as_secs()
                    >= PROGRESS_DEADLINE.as_secs() as i64
            });
    let overall = if policy.state != State::True {
        Wanted::new(
            "Ready",
            State::False,
            "InvalidPolicy",
            policy.message.clone(),
        )
    } else if tunnel_ready.state != State::True {
        Wanted::new(
            "Ready",
            State::False,
            tunnel_ready.reason,
            tunnel_ready.message.clone(),
        )
    } else if ready == 0 {
        if stalled {
            Wanted::new(
                "Ready",
                State::False,
                STALLED,
                format!(
                    "no dataplane became ready in {} minutes: {}",
                    PROGRESS_DEADLINE.as_secs() / 60,
                    dataplanes.message
                ),
            )
        } else {
            Wanted::new(
                "Ready",
                State::False,
                "NoDataplaneReady",
                dataplanes.message.clone(),
            )
        }
    } else {
        Wanted::new(
            "Ready",
            State::True,
            "Running",
            format!("{ready} of {running} dataplanes ready"),
        )
    };
    let enrollment = enrollment_status::condition(
        observed.enrollment,
        observed.tenant,
        observed.enroll_connector,
        now.0,
    );
    let policy_revision = match &observed.policy {
        PolicyOutcome::Applied { revision, .. } => Some(revision.clone()),
        PolicyOutcome::Rejected { kept, .. } => kept.clone(),
    };
    TenantStatus {
        observed_generation: observed.generation,
        conditions: merge(
            &previous.conditions,
            vec![overall, tunnel_ready, policy, dataplanes, enrollment],
            observed.generation,
            now,
        ),
        tunnel_endpoint: endpoint,
        enrollment_secret_ref: Some(SecretRef {
            name: names::ENROLLMENT_SECRET.into(),
        }),
        policy_revision,
        ..TenantStatus::default()
    }
}

/// The part of `status` that reconciles write: all but the dataplanes' reports (the
/// `dataplanes`, `connectors` and `activeSessions` fields and the `ArchiveReachable` and
/// `PolicyEnforced` conditions, which [`crate::report`] writes with a field manager of its
/// own), with the
/// conditions in type order, since the API server may merge the two managers' in any order.
pub fn reconciled_part(status: &TenantStatus) -> TenantStatus {
    let mut conditions: Vec<_> = status
        .conditions
        .iter()
        .filter(|c| {
            ![
                crate::report::summary::ARCHIVE_REACHABLE,
                crate::report::summary::POLICY_ENFORCED,
            ]
            .contains(&c.type_.as_str())
        })
        .cloned()
        .collect();
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    TenantStatus {
        conditions,
        connectors: None,
        active_sessions: None,
        dataplanes: Vec::new(),
        ..status.clone()
    }
}

/// `previous` with its `Ready` condition replaced by `ready`, for `generation`; the other
/// conditions and fields kept.
pub fn with_ready(
    previous: &TenantStatus,
    generation: Option<i64>,
    ready: Wanted,
    now: &Time,
) -> TenantStatus {
    let mut conditions = merge(&previous.conditions, vec![ready], generation, now);
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ != "Ready")
            .cloned(),
    );
    reconciled_part(&TenantStatus {
        observed_generation: generation,
        conditions,
        ..previous.clone()
    })
}

/// The status of a Tenant being deleted while `remaining` dataplanes flush and stop, in
/// `namespace`.
pub fn draining_status(
    previous: &TenantStatus,
    generation: Option<i64>,
    namespace: &str,
    remaining: i64,
    now: &Time,
) -> TenantStatus {
    let draining = Wanted::new(
        "Ready",
        State::False,
        "Draining",
        format!(
            "the Tenant is being deleted: waiting for {remaining} dataplanes to flush their write-ahead logs to the archive and stop; the archive bucket is kept, and so are the namespace {namespace} and the volumes in it"
        ),
    );
    with_ready(previous, generation, draining, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::conditions::find;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).expect("a valid time"))
    }

    fn applied() -> PolicyOutcome {
        PolicyOutcome::Applied {
            revision: "abc123".into(),
            policies: 2,
        }
    }

    fn observed<'a>(policy: PolicyOutcome, service: &'a Value, sts: &'a Value) -> Observed<'a> {
        static ENROLLMENT: std::sync::LazyLock<ObjectMeta> =
            std::sync::LazyLock::new(ObjectMeta::default);
        Observed {
            tenant: "acme",
            generation: Some(3),
            policy,
            tunnel_service: service,
            stateful_set: sts,
            enrollment: &ENROLLMENT,
            enroll_connector: "connector-1",
            waiting: None,
        }
    }

    /// The status of a tenant with a load balancer and two ready dataplanes.
    fn running() -> TenantStatus {
        let service = json!({"spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
        let sts = json!({"status": {"replicas": 2, "readyReplicas": 2}});
        tenant_status(
            &observed(applied(), &service, &sts),
            &TenantStatus::default(),
            &Settings::default(),
            &now(),
        )
    }

    fn status_of(c: &TenantStatus, type_: &str) -> String {
        find(&c.conditions, type_)
            .expect("condition")
            .status
            .clone()
    }

    #[test]
    fn a_running_tenant_is_ready_with_its_endpoint_and_revision() {
        let status = running();
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.tunnel_endpoint.as_deref(), Some("203.0.113.7:4433"));
        assert_eq!(status.policy_revision.as_deref(), Some("abc123"));
        assert_eq!(status_of(&status, "Ready"), "True");
        assert_eq!(status_of(&status, "TunnelReady"), "True");
        assert_eq!(status_of(&status, "PolicyApplied"), "True");
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.type_ != "ArchiveReachable"),
            "the dataplanes' reports decide ArchiveReachable, not the reconcile"
        );
        assert_eq!(
            status
                .enrollment_secret_ref
                .as_ref()
                .map(|s| s.name.as_str()),
            Some("connector-enrollment")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn a_tunnel_domain_names_the_endpoint() {
        let service = json!({"spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb-1.elb.example"}]}}});
        let sts = json!({});
        let settings = Settings {
            tunnel_domain: Some("tunnel.msp.example".into()),
            ..Settings::default()
        };
        let status = tenant_status(
            &observed(applied(), &service, &sts),
            &TenantStatus::default(),
            &settings,
            &now(),
        );
        assert_eq!(
            status.tunnel_endpoint.as_deref(),
            Some("acme.tunnel.msp.example:4433")
        );
        let tunnel = find(&status.conditions, "TunnelReady").expect("TunnelReady");
        assert!(
            tunnel.message.contains("lb-1.elb.example"),
            "{}",
            tunnel.message
        );
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.reason, "NoDataplaneReady");
    }

    #[test]
    fn without_a_load_balancer_the_tenant_is_not_ready_and_says_why() {
        let service = json!({"spec": {"type": "LoadBalancer"}, "status": {}});
        let sts = json!({"status": {"replicas": 1, "readyReplicas": 1}});
        let status = tenant_status(
            &observed(applied(), &service, &sts),
            &TenantStatus::default(),
            &Settings::default(),
            &now(),
        );
        assert_eq!(status.tunnel_endpoint, None);
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AwaitingLoadBalancer")
        );
    }

    #[test]
    fn an_invalid_policy_keeps_the_last_good_revision() {
        let service = json!({"spec": {"type": "NodePort", "ports": [{"nodePort": 30443}]}});
        let sts = json!({"status": {"replicas": 1, "readyReplicas": 1}});
        let lagging = TenantStatus {
            policy_revision: Some("older0".into()),
            ..TenantStatus::default()
        };
        let rejected = PolicyOutcome::Rejected {
            message: "default/p: spec.content[0].match.regex: unclosed group".into(),
            kept: Some("good01".into()),
        };
        let status = tenant_status(
            &observed(rejected, &service, &sts),
            &lagging,
            &Settings::default(),
            &now(),
        );
        assert_eq!(status.policy_revision.as_deref(), Some("good01"));
        let applied = find(&status.conditions, "PolicyApplied").expect("PolicyApplied");
        assert_eq!(applied.status, "False");
        assert!(applied.message.contains("unclosed group"));
        let ready = find(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.reason, "InvalidPolicy");
        let tunnel = find(&status.conditions, "TunnelReady").expect("TunnelReady");
        assert!(tunnel.message.contains("30443"));
    }

    #[test]
    fn draining_replaces_ready_and_keeps_the_rest() {
        let running = running();
        let draining = draining_status(&running, Some(4), "imgate-acme", 2, &now());
        let ready = find(&draining.conditions, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Draining")
        );
        assert!(ready.message.contains("2 dataplanes"));
        assert!(
            ready
                .message
                .contains("the namespace imgate-acme and the volumes in it"),
            "{}",
            ready.message
        );
        assert_eq!(draining.conditions.len(), running.conditions.len());
        assert_eq!(draining.tunnel_endpoint, running.tunnel_endpoint);
    }

    #[test]
    fn dataplanes_that_never_become_ready_say_why_and_are_stuck_after_the_deadline() {
        let service = json!({"spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
        let sts = json!({"status": {"replicas": 1, "readyReplicas": 0}});
        let why = "dataplane-0: container dataplane waiting: CreateContainerConfigError: secret \"s3\" not found";
        let mut seen = observed(applied(), &service, &sts);
        seen.waiting = Some(why);
        let first = tenant_status(
            &seen,
            &TenantStatus::default(),
            &Settings::default(),
            &now(),
        );
        let ready = find(&first.conditions, "Ready").expect("Ready");
        assert_eq!(ready.reason, "NoDataplaneReady");
        assert!(ready.message.ends_with(why), "{}", ready.message);
        let later = |seconds: i64| {
            Time(Timestamp::from_second(1_800_000_000 + seconds).expect("a valid time"))
        };
        let dataplanes = find(&first.conditions, DATAPLANES_READY).expect("DataplanesReady");
        assert_eq!(
            (dataplanes.status.as_str(), dataplanes.reason.as_str()),
            ("False", "NoneReady")
        );
        let soon = tenant_status(&seen, &first, &Settings::default(), &later(599));
        assert_eq!(
            find(&soon.conditions, "Ready").expect("Ready").reason,
            "NoDataplaneReady"
        );
        let stuck = tenant_status(&seen, &soon, &Settings::default(), &later(600));
        let ready = find(&stuck.conditions, "Ready").expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", STALLED)
        );
        assert!(ready.message.contains("in 10 minutes") && ready.message.contains(why));
        // Not ready for long for another reason: the clock starts when the dataplanes are
        // what is missing.
        let mut waited = first.clone();
        waited.conditions.retain(|c| c.type_ != DATAPLANES_READY);
        let fresh = tenant_status(&seen, &waited, &Settings::default(), &later(3600));
        assert_eq!(
            find(&fresh.conditions, "Ready").expect("Ready").reason,
            "NoDataplaneReady"
        );
    }
}
