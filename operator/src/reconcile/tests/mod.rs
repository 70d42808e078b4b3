//! Reconcile scenarios against the scripted API server ([`super::fixtures`]): what the
//! operator asks of the API server, in what order, and with what, for each situation a real
//! cluster puts it in.

mod leader;
mod tenant;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use imgate_crds::{IMPolicy, Tenant};
use kube::Client;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::{ApiServer, Reply, Seen, list};
use super::{Context, Error, reconcile};
use crate::desired::Object;
use crate::settings::Settings;

/// The small firm of the examples, and its policy.
const TENANT: &str = "harbor-dental";

/// The operator's context for `client`, with default settings.
pub(crate) fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Settings::default(),
        Some("test".into()),
    ))
}

/// The URL path of `object`.
fn path(object: &Object) -> String {
    let resource = object.api_resource();
    let base = if resource.group.is_empty() {
        format!("/api/{}", resource.version)
    } else {
        format!("/apis/{}/{}", resource.group, resource.version)
    };
    let name = object.meta().name.clone().unwrap_or_default();
    match &object.meta().namespace {
        Some(namespace) => format!("{base}/namespaces/{namespace}/{}/{name}", resource.plural),
        None => format!("{base}/{}/{name}", resource.plural),
    }
}

fn tenant_path() -> String {
    format!("/apis/imgate.io/v1alpha1/tenants/{TENANT}")
}

/// The Tenant as the API server holds it after its first reconcile began.
fn finalized(mut tenant: Tenant) -> Tenant {
    tenant.metadata.finalizers = Some(vec![super::FINALIZER.into()]);
    tenant
}

/// Runs one reconcile of `tenant` against `server`, which `script` drives; the reconcile's
/// result once the script has ended (a reconcile making more requests than scripted fails).
async fn run<F, Fut>(tenant: Tenant, script: F) -> (Result<Action, Error>, Arc<Context>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client, server) = super::fixtures::pair();
    let ctx = context(client);
    let task = tokio::spawn(reconcile(Arc::new(tenant), ctx.clone()));
    script(server).await;
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the reconcile ended when the script did (no unscripted request)")
        .expect("the reconcile did not panic");
    (result, ctx)
}

/// [`run`], where `script` hands the server back when it ends and the reconcile must then end
/// without another request: the server stays up, so a request beyond the script fails the
/// test instead of failing at a closed connection.
async fn run_to_the_end<F, Fut>(tenant: Tenant, script: F) -> Result<Action, Error>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ApiServer>,
{
    let (client, server) = super::fixtures::pair();
    let ctx = context(client);
    let mut task = tokio::spawn(reconcile(Arc::new(tenant), ctx));
    let mut server = script(server).await;
    tokio::select! {
        Some(request) = server.unscripted() => panic!("a request beyond the script: {request}"),
        result = &mut task => result.expect("the reconcile did not panic"),
    }
}

/// Answers the policy list with `policies`.
async fn serve_policies(server: &mut ApiServer, policies: &[IMPolicy]) -> Seen {
    let items = policies
        .iter()
        .map(|p| serde_json::to_value(p).expect("JSON"))
        .collect();
    server
        .expect(
            Method::GET,
            "/apis/imgate.io/v1alpha1/impolicies",
            Reply::Json(StatusCode::OK, list("IMPolicy", items)),
        )
        .await
}

/// The pin of the tunnel CA a settled cluster holds.
const STANDING_PIN: &str = "5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592";

/// How the scripted cluster stands.
struct Cluster {
    /// The generated Secrets exist already.
    secrets_exist: bool,
    /// Their annotations, by name, when a test knows them (from the reconcile that made
    /// them); otherwise a standing CA's pin and an unused token for the wanted connector.
    annotations: std::collections::BTreeMap<String, Value>,
    /// The tunnel's load balancer has this address.
    load_balancer: Option<&'static str>,
    /// Ready dataplanes.
    ready: i64,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            secrets_exist: false,
            annotations: std::collections::BTreeMap::new(),
            load_balancer: Some("203.0.113.7"),
            ready: 1,
        }
    }
}

impl Cluster {
    /// A cluster where the tenant's Secrets exist and all is healthy.
    fn settled() -> Self {
        Self {
            secrets_exist: true,
            ..Self::default()
        }
    }
}

/// Generated Secret `secret`'s metadata as `cluster` holds it.
fn existing(secret: &k8s_openapi::api::core::v1::Secret, cluster: &Cluster) -> Value {
    use crate::enrollment::{CA_PIN, EXPIRES};
    let name = secret.metadata.name.clone().unwrap_or_default();
    let annotations = cluster.annotations.get(&name).cloned().unwrap_or_else(|| {
        let mut annotations = json!(secret.metadata.annotations);
        match name.as_str() {
            crate::names::TUNNEL_CA_SECRET => annotations[CA_PIN] = STANDING_PIN.into(),
            crate::names::ENROLLMENT_SECRET => {
                annotations[EXPIRES] = "2099-01-01T00:00:00Z".into();
            }
            _ => {}
        }
        annotations
    });
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "namespace": secret.metadata.namespace, "annotations": annotations}})
}

/// Answers the read of the tenant's namespace that precedes the writes: absent on a new
/// cluster, this Tenant's on a settled one.
async fn serve_namespace_read(
    server: &mut ApiServer,
    namespace: &k8s_openapi::api::core::v1::Namespace,
    cluster: &Cluster,
) -> Seen {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let url = format!("/api/v1/namespaces/{name}");
    let reply = if cluster.secrets_exist {
        Reply::Json(
            StatusCode::OK,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": name, "annotations": namespace.metadata.annotations}}),
        )
    } else {
        Reply::Fail(StatusCode::NOT_FOUND, "NotFound")
    };
    server.expect(Method::GET, &url, reply).await
}

/// Serves the writes of `objects`, in order, as `cluster` stands; every request seen.
async fn serve_objects(server: &mut ApiServer, objects: &[Object], cluster: &Cluster) -> Vec<Seen> {
    let mut seen = Vec::new();
    for object in objects {
        let url = path(object);
        if let Object::Namespace(namespace) = object {
            seen.push(serve_namespace_read(server, namespace, cluster).await);
        }
        if let Some(secret) = object.generated_secret() {
            if cluster.secrets_exist {
                let meta = existing(secret, cluster);
                seen.push(
                    server
                        .expect(Method::GET, &url, Reply::Json(StatusCode::OK, meta))
                        .await,
                );
            } else {
                seen.push(
                    server
                        .expect(
                            Method::GET,
                            &url,
                            Reply::Fail(StatusCode::NOT_FOUND, "NotFound"),
                        )
                        .await,
                );
                let collection = url.rsplit_once('/').expect("a name").0.to_owned();
                seen.push(server.expect(Method::POST, &collection, Reply::Echo).await);
            }
            continue;
        }
        let reply = match object {
            Object::StatefulSet(_) => Reply::EchoOver(
                json!({"status": {"replicas": cluster.ready, "readyReplicas": cluster.ready}}),
            ),
            Object::Service(s)
                if s.metadata.name.as_deref() == Some(crate::names::TUNNEL_SERVICE) =>
            {
                let ingress: Vec<Value> = cluster
                    .load_balancer
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect();
                Reply::EchoOver(json!({"status": {"loadBalancer": {"ingress": ingress}}}))
            }
            _ => Reply::Echo,
        };
        seen.push(server.expect(Method::PATCH, &url, reply).await);
    }
    seen
}

/// The condition `type_` in a status body.
fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}
