//! Why a tenant's dataplanes are not ready, in the words of their pods: a pod the scheduler
//! cannot place, a container waiting (a missing Secret, an image that cannot be pulled, a
//! crash loop with its last exit), so that the Tenant's `Ready` condition says what to fix
//! rather than only that nothing is ready.
//!
//! Invariants: read from the pods' status alone (the operator may list pods and nothing more
//! of them); at most [`SHOWN`] pods are described, in name order; a pod with nothing to say
//! is left out, and no pods at all say so.

use imgate_crds::Tenant;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::{Context, Error, api};
use crate::names;

/// The most pods described in one message.
const SHOWN: usize = 3;

/// What stands in the way of `tenant`'s dataplane pods, as the API server has them.
pub async fn why_not_ready(tenant: &Tenant, ctx: &Context) -> Result<String, Error> {
    let name = tenant.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names::namespace(&name));
    let selector = names::selector_query(&name);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api("list", format!("dataplane pods of {name}")))?;
    Ok(describe(&names::namespace(&name), &listed.items))
}

/// What `pods` of `namespace` say of themselves: each pod's obstacle, `; `-separated.
pub fn describe(namespace: &str, pods: &[Pod]) -> String {
    if pods.is_empty() {
        return format!(
            "no dataplane pod exists yet (kubectl -n {namespace} describe statefulset dataplane says why)"
        );
    }
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|pod| pod.name_any());
    let said: Vec<String> = sorted
        .iter()
        .filter_map(|pod| obstacle(pod).map(|what| format!("{}: {what}", pod.name_any())))
        .take(SHOWN)
        .collect();
    if said.is_empty() {
        "the pods are starting".into()
    } else {
        said.join("; ")
    }
}

/// What keeps `pod` from being ready, if it says.
fn obstacle(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(condition) = unscheduled {
        return Some(format!(
            "not scheduled: {}",
            condition.message.as_deref().unwrap_or("no reason given")
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        let state = container.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("Waiting");
            let mut said = format!("container {} waiting: {reason}", container.name);
            if let Some(message) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
                said.push_str(&format!(": {message}"));
            }
            let last = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref());
            if let Some(exit) = last {
                said.push_str(&format!(
                    " (last exit: {}, code {})",
                    exit.reason.as_deref().unwrap_or("terminated"),
                    exit.exit_code
                ));
            }
            return Some(said);
        }
        if !container.ready && state.and_then(|s| s.running.as_ref()).is_some() {
            return Some(format!(
                "container {} running, not ready yet (its /healthz readiness probe)",
                container.name
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "status": status}))
            .expect("a Pod")
    }

    #[test]
    fn each_pod_says_what_it_waits_for() {
        let pods = [
            pod(
                "dataplane-1",
                serde_json::json!({"conditions": [{"type": "PodScheduled", "status": "False",
                    "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]}),
            ),
            pod(
                "dataplane-0",
                serde_json::json!({"containerStatuses": [{"name": "dataplane", "ready": false,
                    "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CreateContainerConfigError",
                        "message": "secret \"harbor-dental-s3\" not found"}}}]}),
            ),
            pod(
                "dataplane-2",
                serde_json::json!({"containerStatuses": [{"name": "dataplane", "ready": false,
                    "restartCount": 4, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}),
            ),
            pod("dataplane-3", serde_json::json!({})),
        ];
        assert_eq!(
            describe("imgate-x", &pods),
            "dataplane-0: container dataplane waiting: CreateContainerConfigError: secret \"harbor-dental-s3\" not found; \
             dataplane-1: not scheduled: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.; \
             dataplane-2: container dataplane waiting: CrashLoopBackOff (last exit: Error, code 1)"
        );
        assert!(describe("imgate-x", &[]).contains("kubectl -n imgate-x describe statefulset"));
        assert_eq!(describe("imgate-x", &pods[3..]), "the pods are starting");
    }
}
