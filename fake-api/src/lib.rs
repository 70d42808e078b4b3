//! An in-memory Kubernetes API server, enough of one for the operator and the dataplanes: list
//! and watch (with label and field selectors, also as metadata), get (also as metadata),
//! create, server-side apply, merge patch and update with a `resourceVersion` precondition,
//! and the status subresource. It answers over real HTTP, so a client under test pays for
//! encoding and decoding as it would against a cluster, and programs in other processes reach
//! it through the kubeconfig [`FakeApi::kubeconfig`] writes. It can add latency to every
//! request (benchmarks) and refuse chosen writes the way a real API server refuses them
//! ([`FakeApi::refuse`]), so that tests show what the operator does then.
//!
//! What it does not do, so that nothing passing here is taken for proof that a cluster
//! accepts it: it validates nothing (no schema, no CRD validation or CEL rules, none of the
//! API server's rules across fields: `imgate_operator::validation` and `imgate policy lint`
//! check those); it runs no admission (no RBAC: the reconcile tests check requests against
//! the Helm chart's RBAC; no Pod Security, no webhooks, no owner-reference permission
//! plugin); it collects no garbage (deleting an owner leaves what it owns, and a namespace
//! holds nothing); it tracks field managers only for status (an apply replaces the whole
//! object but its identity and status, where a real server merges by field owner); it runs no
//! controllers but one stand-in: a new StatefulSet reports one ready replica and a new
//! LoadBalancer Service an address. Use it for what it shows: the requests a program makes,
//! and how the program reacts to the answers.
//!
//! Invariants: an object written to a namespaced path carries that namespace; every write
//! bumps one global `resourceVersion`; a write that changes nothing (apart from
//! `resourceVersion`) is not an event, as on a real API server, and a deletion is; an update
//! (`PUT`) replaces the object but its identity and status, a merge patch merges; a write
//! that changes an object's `spec` bumps its `generation`, and a status write never does; a
//! server-side apply of status keeps the fields other field managers applied, merging
//! `conditions` by type, and drops those its own manager applied before and left out; a
//! created StatefulSet reports one ready replica and a created LoadBalancer Service an
//! address, as a healthy cluster would shortly after.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where an object lives: its plural, namespace and name.
type Key = (String, Option<String>, String);
/// An object and a field manager of its status.
type Owner = (Key, String);

/// A write the server refuses, as [`FakeApi::refuse`] scripted it.
#[derive(Clone, Debug)]
struct Refusal {
    method: Method,
    plural: String,
    name: String,
    code: StatusCode,
    reason: String,
    message: String,
}

/// The server's state.
#[derive(Clone)]
pub struct FakeApi {
    /// Writes it refuses.
    refusals: Arc<Mutex<Vec<Refusal>>>,
    objects: Arc<Mutex<BTreeMap<Key, Value>>>,
    version: Arc<AtomicU64>,
    events: broadcast::Sender<(String, Value)>,
    /// Requests served, by method.
    pub requests: Arc<Mutex<BTreeMap<String, u64>>>,
    /// How long each request waits before it is served, as on a busy API server.
    latency: Duration,
    /// The status fields each field manager applied, per object.
    status_owners: Arc<Mutex<BTreeMap<Owner, BTreeSet<String>>>>,
}

struct Target {
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match *segments.first()? {
        "api" => segments.get(2..)?,
        "apis" => segments.get(3..)?,
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Target {
        plural: rest.first()?.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: rest.get(2) == Some(&"status"),
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect()
}

/// Whether `object` passes the `labelSelector` and `fieldSelector` of `params`.
fn selected(object: &Value, params: &BTreeMap<String, String>) -> bool {
    let labels_ok = params.get("labelSelector").is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|term| {
            term.split_once('=')
                .is_some_and(|(k, v)| object["metadata"]["labels"][k] == v)
        })
    });
    let fields_ok = params.get("fieldSelector").is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|term| {
            term.split_once('=').is_some_and(|(path, v)| {
                let mut at = object;
                for part in path.split('.') {
                    at = &at[part];
                }
                at == v
            })
        })
    });
    labels_ok && fields_ok
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(key);
                } else {
                    merge(base.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

fn without_version(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    object
}

fn status(code: StatusCode, reason: &str) -> Response {
    failure(code, reason, reason)
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "reason": reason, "code": code.as_u16(), "message": message});
    respond(code, &body)
}

/// Whether a request asks for metadata only (`Accept: ...;as=PartialObjectMetadata...`).
fn metadata_only(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

/// `object` as a `PartialObjectMetadata`, as a metadata-only request receives it.
fn partial(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

fn respond(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    /// An empty server.
    pub fn new() -> Self {
        Self {
            refusals: Arc::default(),
            objects: Arc::default(),
            version: Arc::new(AtomicU64::new(1)),
            events: broadcast::channel(1 << 16).0,
            requests: Arc::default(),
            latency: Duration::ZERO,
            status_owners: Arc::default(),
        }
    }

    /// This server, making each request wait `latency` before it is served.
    pub fn with_latency(self, latency: Duration) -> Self {
        Self { latency, ..self }
    }

    /// Refuses every `method` (`POST`, `PUT`, `PATCH`, `DELETE`) on object `name` of `plural`
    /// from now on (until [`FakeApi::lift`]) with `code`, `reason` and `message`, as a real
    /// API server refuses an invalid object (`422`, `Invalid`) or a write its admission or
    /// RBAC forbids (`403`, `Forbidden`).
    pub fn refuse(
        &self,
        method: &str,
        plural: &str,
        name: &str,
        code: u16,
        reason: &str,
        message: &str,
    ) {
        let refusal = Refusal {
            method: method.parse().unwrap_or(Method::PATCH),
            plural: plural.into(),
            name: name.into(),
            code: StatusCode::from_u16(code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            reason: reason.into(),
            message: message.into(),
        };
        self.refusals.lock().expect("lock").push(refusal);
    }

    /// Lifts every refusal scripted for object `name` of `plural`.
    pub fn lift(&self, plural: &str, name: &str) {
        self.refusals
            .lock()
            .expect("lock")
            .retain(|r| r.plural != plural || r.name != name);
    }

    /// The refusal scripted for this request, if any.
    fn refusal(&self, method: &Method, target: &Target, body: &Value) -> Option<Refusal> {
        let name = target
            .name
            .clone()
            .or_else(|| body["metadata"]["name"].as_str().map(str::to_owned))?;
        self.refusals
            .lock()
            .expect("lock")
            .iter()
            .find(|r| r.method == method && r.plural == target.plural && r.name == name)
            .cloned()
    }

    /// Serves this API over HTTP on a free loopback port until the runtime stops; returns its
    /// URL.
    pub async fn serve(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let served = self.clone();
        let app = axum::Router::new().fallback(move |method, uri, headers, body| {
            served.clone().handle(method, uri, headers, body)
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }

    /// A kubeconfig that points at `url` (from [`FakeApi::serve`]) with no credentials, in
    /// `namespace`, as a pod's service account would be.
    pub fn kubeconfig(url: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster: {{server: \"{url}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: {namespace}}}\nusers:\n- name: fake\n  user: {{}}\n"
        )
    }

    fn next_version(&self) -> String {
        self.version.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Stores `object` of `plural` as a client's create would.
    pub fn insert(&self, plural: &str, mut object: Value) {
        let key = (
            plural.to_owned(),
            object["metadata"]["namespace"].as_str().map(str::to_owned),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        object["metadata"]["resourceVersion"] = self.next_version().into();
        object["metadata"]["uid"] = format!("uid-{}-{}", key.0, key.2).into();
        object["metadata"]["generation"] = 1.into();
        self.objects.lock().expect("lock").insert(key, object);
    }

    /// The objects of `plural`.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        let objects = self.objects.lock().expect("lock");
        objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores a write of `object` under `key`, emitting an event when it changed anything.
    fn store(&self, key: Key, mut object: Value, before: Option<&Value>) -> Value {
        let changed = before.is_none_or(|b| without_version(b) != without_version(&object));
        if !changed {
            return before.cloned().unwrap_or_default();
        }
        object["metadata"]["resourceVersion"] = self.next_version().into();
        self.objects
            .lock()
            .expect("lock")
            .insert(key.clone(), object.clone());
        let kind = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let _ = self
            .events
            .send((key.0, json!({"type": kind, "object": object.clone()})));
        object
    }

    /// Serves one request.
    pub async fn handle(
        self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        *self
            .requests
            .lock()
            .expect("lock")
            .entry(method.to_string())
            .or_default() += 1;
        tokio::time::sleep(self.latency).await;
        let Some(target) = parse(uri.path()) else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        let params = query(&uri);
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if let Some(refusal) = self.refusal(&method, &target, &body) {
            return failure(refusal.code, &refusal.reason, &refusal.message);
        }
        let metadata = metadata_only(&headers);
        match (method, &target.name) {
            (Method::GET, None) if params.get("watch").is_some_and(|w| w == "true") => {
                self.watch(target, params, metadata)
            }
            (Method::GET, None) => self.list(&target, &params, metadata),
            (Method::GET, Some(name)) => self.get(&target, name, &headers),
            (Method::POST, None) => self.create(&target, body),
            (Method::PATCH, Some(name)) => {
                let manager = params.get("fieldManager").cloned().unwrap_or_default();
                self.patch(&Method::PATCH, &target, name, body, &headers, &manager)
            }
            (Method::PUT, Some(name)) => {
                self.patch(&Method::PUT, &target, name, body, &headers, "")
            }
            (Method::DELETE, Some(name)) => {
                let key = (
                    target.plural.clone(),
                    target.namespace.clone(),
                    name.clone(),
                );
                let removed = self.objects.lock().expect("lock").remove(&key);
                match removed {
                    Some(mut object) => {
                        object["metadata"]["resourceVersion"] = self.next_version().into();
                        let event = json!({"type": "DELETED", "object": object});
                        let _ = self.events.send((target.plural.clone(), event));
                        respond(
                            StatusCode::OK,
                            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                        )
                    }
                    None => status(StatusCode::NOT_FOUND, "NotFound"),
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }

    fn list(&self, target: &Target, params: &BTreeMap<String, String>, metadata: bool) -> Response {
        let objects = self.objects.lock().expect("lock");
        let items: Vec<Value> = objects
            .iter()
            .filter(|((p, ns, _), v)| {
                *p == target.plural
                    && (target.namespace.is_none() || *ns == target.namespace)
                    && selected(v, params)
            })
            .map(|(_, v)| if metadata { partial(v) } else { v.clone() })
            .collect();
        let version = self.version.load(Ordering::Relaxed).to_string();
        respond(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
        )
    }

    fn watch(&self, target: Target, params: BTreeMap<String, String>, metadata: bool) -> Response {
        let receiver = self.events.subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((event, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |(plural, event)| {
            let keep = *plural == target.plural
                && target
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| event["object"]["metadata"]["namespace"] == ns.as_str())
                && selected(&event["object"], &params);
            futures::future::ready(keep)
        })
        .map(move |(_, mut event)| {
            if metadata {
                event["object"] = partial(&event["object"]);
            }
            Ok::<_, std::convert::Infallible>(format!("{event}\n"))
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_default()
    }

    fn get(&self, target: &Target, name: &str, headers: &HeaderMap) -> Response {
        let key = (
            target.plural.clone(),
            target.namespace.clone(),
            name.to_owned(),
        );
        let objects = self.objects.lock().expect("lock");
        let Some(object) = objects.get(&key) else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        if metadata_only(headers) {
            return respond(StatusCode::OK, &partial(object));
        }
        respond(StatusCode::OK, object)
    }

    fn create(&self, target: &Target, mut object: Value) -> Response {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (
            target.plural.clone(),
            target.namespace.clone(),
            name.clone(),
        );
        if self.objects.lock().expect("lock").contains_key(&key) {
            return status(StatusCode::CONFLICT, "AlreadyExists");
        }
        object["metadata"]["uid"] = format!("uid-{}-{name}", target.plural).into();
        object["metadata"]["generation"] = 1.into();
        if let Some(namespace) = &target.namespace {
            object["metadata"]["namespace"] = namespace.as_str().into();
        }
        let stored = self.store(key, object, None);
        respond(StatusCode::CREATED, &stored)
    }

    fn patch(
        &self,
        method: &Method,
        target: &Target,
        name: &str,
        body: Value,
        headers: &HeaderMap,
        manager: &str,
    ) -> Response {
        let key = (
            target.plural.clone(),
            target.namespace.clone(),
            name.to_owned(),
        );
        let before = self.objects.lock().expect("lock").get(&key).cloned();
        let content = headers
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default();
        let apply = content.contains("apply-patch");
        let replace = method == Method::PUT;
        let Some(mut object) = before
            .clone()
            .or_else(|| apply.then(|| json!({"metadata": {}})))
        else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        if let Some(expected) = body["metadata"]["resourceVersion"].as_str()
            && object["metadata"]["resourceVersion"] != expected
        {
            return status(StatusCode::CONFLICT, "Conflict");
        }
        if target.status && apply {
            let owner = (key.clone(), manager.to_owned());
            let mut owners = self.status_owners.lock().expect("lock");
            let before = owners.remove(&owner).unwrap_or_default();
            let owned = apply_status(&mut object["status"], &body["status"], &before);
            owners.insert(owner, owned);
        } else if target.status {
            object["status"] = body["status"].clone();
        } else if apply || replace {
            let kept_meta = object["metadata"].clone();
            let kept_status = object["status"].clone();
            object = body;
            // An update replaces finalizers too; an apply of an object without them keeps
            // those other managers set.
            let kept: &[&str] = if replace {
                &["uid", "generation", "resourceVersion"]
            } else {
                &["uid", "finalizers", "generation", "resourceVersion"]
            };
            for field in kept {
                if !kept_meta[*field].is_null() {
                    object["metadata"][*field] = kept_meta[*field].clone();
                }
            }
            object["status"] = if kept_status.is_null() {
                healthy(&target.plural, &object)
            } else {
                kept_status
            };
        } else {
            merge(&mut object, &body);
        }
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = format!("uid-{}-{name}", target.plural).into();
        }
        if let Some(namespace) = &target.namespace {
            object["metadata"]["namespace"] = namespace.as_str().into();
        }
        if before.is_none() {
            object["metadata"]["generation"] = 1.into();
        }
        if let Some(before) = &before
            && before["spec"] != object["spec"]
        {
            let generation = before["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            object["metadata"]["generation"] = generation.into();
        }
        let stored = self.store(key, object, before.as_ref());
        respond(StatusCode::OK, &stored)
    }
}

/// Server-side apply of `applied` to `status` by a field manager that owned `before`: what it
/// owned and no longer applies goes, the rest is set; `conditions` merge by `type` (a list map,
/// as the CRDs declare it). Returns what the manager owns now: top-level fields by name, and
/// conditions as `conditions/TYPE`.
fn apply_status(
    status: &mut Value,
    applied: &Value,
    before: &BTreeSet<String>,
) -> BTreeSet<String> {
    if !status.is_object() {
        *status = json!({});
    }
    let mut owned = BTreeSet::new();
    let empty = serde_json::Map::new();
    let fields = applied.as_object().unwrap_or(&empty);
    for (field, value) in fields {
        if field == "conditions" {
            for condition in value.as_array().into_iter().flatten() {
                owned.insert(format!(
                    "conditions/{}",
                    condition["type"].as_str().unwrap_or_default()
                ));
            }
        } else {
            owned.insert(field.clone());
        }
    }
    let mut conditions: Vec<Value> = status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            let key = format!("conditions/{}", c["type"].as_str().unwrap_or_default());
            !before.contains(&key) || owned.contains(&key)
        })
        .collect();
    for condition in fields
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match conditions
            .iter_mut()
            .find(|c| c["type"] == condition["type"])
        {
            Some(existing) => *existing = condition.clone(),
            None => conditions.push(condition.clone()),
        }
    }
    let object = status.as_object_mut().expect("made an object above");
    for field in before
        .iter()
        .filter(|f| !f.starts_with("conditions/") && !owned.contains(*f))
    {
        object.remove(field);
    }
    for (field, value) in fields {
        if field != "conditions" {
            object.insert(field.clone(), value.clone());
        }
    }
    if conditions.is_empty() {
        object.remove("conditions");
    } else {
        object.insert("conditions".into(), conditions.into());
    }
    owned
}

/// The status a healthy cluster gives a new object of `plural` shortly after it is made.
fn healthy(plural: &str, object: &Value) -> Value {
    match plural {
        "statefulsets" => json!({"replicas": 1, "readyReplicas": 1}),
        "services" if object["spec"]["type"] == "LoadBalancer" => {
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
        }
        _ => Value::Null,
    }
}
