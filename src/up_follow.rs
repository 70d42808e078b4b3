//! `imgate up --policy-config-map`: what a dataplane in a cluster does with its policy
//! ConfigMap as the API delivers it ([`policy_follow`]): a policy set that compiles is swapped
//! in and its revision recorded for the report; a tenant's identity sources replace the
//! directory; the revoked connectors replace the tunnel's revocation list, and their open
//! connections close.
//!
//! Invariants: whatever is refused (a policy set that does not compile, identity sources that
//! do not parse or lack their LDAP bind) leaves the last good one in force, with an error in
//! the log that says why; sessions are never dropped by a change.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use imgate_dataplane::proxy::shared::Shared;
use imgate_dataplane::tunnel::tokens::TunnelState;
use imgate_operator::policy::{IDENTITY_FILE, compile_delivered};
use imgate_operator::policy_follow::{self, Follower};

use crate::up_identity;

/// Where the delivered parts go.
pub struct Delivery {
    /// The sessions' shared state: policy and directory.
    pub shared: Arc<Shared>,
    /// The tenant the policies are for.
    pub tenant: String,
    /// The ConfigMap, for the log.
    pub name: String,
    /// The revision of the delivered policy set in force.
    pub enforced: Arc<Mutex<Option<String>>>,
    /// The tunnel's revocation list.
    pub tunnel: TunnelState,
}

impl Delivery {
    /// Follows the ConfigMap through `client` for as long as it runs.
    pub async fn follow(mut self, client: kube::Client) {
        let name = self.name.clone();
        policy_follow::follow(kube::Api::default_namespaced(client), &name, &mut self).await;
    }
}

impl Follower for Delivery {
    fn policy(&mut self, revision: &str, yaml: &str) {
        let name = &self.name;
        match compile_delivered(&self.tenant, yaml) {
            Ok(policy) => {
                let rules = policy.content_rule_count();
                self.shared.reload(policy);
                *self
                    .enforced
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(revision.to_owned());
                tracing::info!(target: "imgate::session", "policy revision {revision} from ConfigMap {name}, in force ({rules} content rules)");
            }
            Err(error) => {
                tracing::error!(target: "imgate::session", "policy revision {revision} from ConfigMap {name} refused, the last good one stays in force: {error}")
            }
        }
    }

    fn identity(&mut self, yaml: Option<&str>) {
        let name = &self.name;
        let origin = format!("{IDENTITY_FILE} of ConfigMap {name}");
        let built = yaml
            .map(|yaml| up_identity::parse(yaml, &origin))
            .transpose()
            .and_then(|identity| {
                let directory = up_identity::directory(identity.as_ref())?;
                Ok((up_identity::describe(identity.as_ref()), directory))
            });
        match built {
            Ok((described, directory)) => {
                self.shared.set_directory(directory);
                tracing::info!(target: "imgate::session", "identity sources from ConfigMap {name} in force: {described}");
            }
            Err(error) => {
                tracing::error!(target: "imgate::session", "identity sources from ConfigMap {name} refused, the last good ones stay in force: {error:#}")
            }
        }
    }

    fn revoked(&mut self, ids: &BTreeSet<String>) {
        let list: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.tunnel
            .deliver_revocations(ids.iter().cloned().collect::<HashSet<_>>());
        tracing::info!(target: "imgate::tunnel", "revoked connectors from ConfigMap {}: [{}]", self.name, list.join(", "));
    }
}
