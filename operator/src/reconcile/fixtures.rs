//! A scripted API server for reconcile tests, on kube's tower-test mock service: each test
//! states, in order, the requests a reconcile must make and how the server answers them.
//!
//! Invariants: a request that differs from the script in method or path, or that the Helm
//! chart's RBAC does not permit, fails the test at once, naming both; a reconcile that stops before the script ends fails the test; answers
//! are built the way a real API server builds them (an applied object is returned as
//! applied, with a `resourceVersion`; errors are `Status` objects with reason and code).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::chart_rbac::Subject;

/// How long a test waits for the next request before deciding the reconcile stopped.
const PATIENCE: Duration = Duration::from_secs(10);

/// The scripted server's end of the client.
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    subject: Subject,
}

/// A request the server received.
#[derive(Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The body, as JSON (`Null` when empty).
    pub body: Value,
}

/// How the server answers one request.
pub enum Reply {
    /// `200` with the request's own body, given a `resourceVersion` (what an apply returns).
    Echo,
    /// `200` with the request's body merged over this object (an apply to an object whose
    /// status the server already has).
    EchoOver(Value),
    /// `200` (or `201`) with this body.
    Json(StatusCode, Value),
    /// A `Status` failure with this code and reason.
    Fail(StatusCode, &'static str),
    /// `200` with these objects, one JSON document a line (a watch's events).
    Lines(Vec<Value>),
}

/// A client of the operator's, talking to a new scripted server.
pub fn pair() -> (Client, ApiServer) {
    pair_as(Subject::Operator, "default")
}

/// A client of `subject`'s in `namespace`, talking to a new scripted server.
pub fn pair_as(subject: Subject, namespace: &str) -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        Client::new(service, namespace),
        ApiServer { handle, subject },
    )
}

/// A list of `kind` holding `items`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

impl ApiServer {
    /// Takes the next request without answering it (a server that hangs): its method and
    /// URI, and what answers it, to be dropped when the test is done with it.
    pub async fn next_raw(&mut self) -> (String, Option<mock::SendResponse<Response<Body>>>) {
        match self.handle.next_request().await {
            Some((request, respond)) => (
                format!("{} {}", request.method(), request.uri()),
                Some(respond),
            ),
            None => (String::new(), None),
        }
    }

    /// Waits for a request the script did not expect: its method and URI, or `None` once
    /// the client is gone.
    pub async fn unscripted(&mut self) -> Option<String> {
        let (request, _) = self.handle.next_request().await?;
        Some(format!("{} {}", request.method(), request.uri()))
    }

    /// Expects a `method` request whose path starts with `path`, and answers it with `reply`.
    pub async fn expect(&mut self, method: Method, path: &str, reply: Reply) -> Seen {
        let (request, respond) = tokio::time::timeout(PATIENCE, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
        let uri = request.uri().to_string();
        let seen_method = request.method().clone();
        assert_eq!(
            (request.method(), uri.split('?').next().unwrap_or_default()),
            (&method, path),
            "expected {method} {path}, got {} {uri}",
            request.method()
        );
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("a readable request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        if let Err(refused) = super::chart_rbac::permits(self.subject, &seen_method, &uri, &body) {
            panic!("{refused}");
        }
        let json = |value: &Value| serde_json::to_vec(value).expect("JSON");
        let (status, answer) = match reply {
            Reply::Lines(lines) => (
                StatusCode::OK,
                lines
                    .iter()
                    .flat_map(|line| json(line).into_iter().chain([b'\n']))
                    .collect(),
            ),
            Reply::Echo => (StatusCode::OK, json(&with_version(body.clone()))),
            Reply::EchoOver(mut base) => {
                merge(&mut base, body.clone());
                (StatusCode::OK, json(&with_version(base)))
            }
            Reply::Json(status, value) => (status, json(&value)),
            Reply::Fail(status, reason) => (
                status,
                json(
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": format!("{reason} (scripted)"), "reason": reason, "code": status.as_u16()}),
                ),
            ),
        };
        let response = Response::builder()
            .status(status)
            .body(Body::from(answer))
            .expect("a response");
        respond.send_response(response);
        Seen {
            method: seen_method,
            uri,
            body,
        }
    }
}

fn with_version(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), "2".into());
    }
    object
}
