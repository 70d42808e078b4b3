//! Writing a tenant's desired objects: server-side apply for everything the operator keeps in
//! shape, create-once for the Secrets whose keys it generates.
//!
//! Invariants: each apply is forced with the operator's field manager (drift is undone);
//! a generated Secret is read by metadata only (its keys never pass through the operator
//! again) and created only when absent; `409 AlreadyExists` on that create means another
//! replica won the race and its keys stand. The tunnel CA's Secret carries its certificate's
//! pin as an annotation ([`enrollment::CA_PIN`]), from which the enrollment token is minted
//! (after it, in the same pass), so the token always pins the CA that stands.

use std::collections::BTreeMap;

use imgate_dataplane::proxy::tls::{CaPem, InterceptionCa};
use imgate_dataplane::tunnel::tokens::ca_pin_of_pem;
use imgate_dataplane::tunnel::trust::TunnelCa;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::{Context, Error, api};
use crate::desired::Object;
use crate::enrollment;
use crate::names::{self, FIELD_MANAGER};

/// What the API server returned for the objects a Tenant's status is read from.
#[derive(Debug, Default)]
pub struct Applied {
    /// The tunnel Service, with its load balancer's address once it has one.
    pub tunnel_service: Value,
    /// The dataplanes' StatefulSet, with its replica counts.
    pub stateful_set: Value,
    /// The enrollment Secret's metadata: which connector its token enrolls, until when, and
    /// whether it was used.
    pub enrollment: ObjectMeta,
}

/// Writes `objects` of tenant `tenant` front to back.
pub async fn apply_all(objects: &[Object], tenant: &str, ctx: &Context) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    let mut ca_pin = None;
    for object in objects {
        if let Some(secret) = object.generated_secret() {
            let meta = create_once(secret, tenant, ca_pin.as_deref(), ctx).await?;
            match secret.metadata.name.as_deref() {
                Some(names::TUNNEL_CA_SECRET) => {
                    ca_pin = meta
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(enrollment::CA_PIN))
                        .cloned();
                }
                Some(names::ENROLLMENT_SECRET) => applied.enrollment = meta,
                _ => {}
            }
            continue;
        }
        let returned = server_side_apply(object, ctx).await?;
        match (object, object.meta().name.as_deref()) {
            (Object::Service(_), Some(names::TUNNEL_SERVICE)) => applied.tunnel_service = returned,
            (Object::StatefulSet(_), _) => applied.stateful_set = returned,
            _ => {}
        }
    }
    Ok(applied)
}

/// Applies `object` and returns it as the API server now has it.
async fn server_side_apply(object: &Object, ctx: &Context) -> Result<Value, Error> {
    let resource = object.api_resource();
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let objects: Api<DynamicObject> = match &meta.namespace {
        Some(namespace) => Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let returned = objects
        .patch(name, &params, &Patch::Apply(object.to_json()))
        .await
        .map_err(api("apply", object.describe()))?;
    Ok(serde_json::to_value(returned).unwrap_or_default())
}

/// Creates generated Secret `secret` of `tenant` with new keys (an enrollment token pins the
/// tunnel CA `ca_pin`), unless it exists; its metadata as the API server has it.
async fn create_once(
    secret: &Secret,
    tenant: &str,
    ca_pin: Option<&str>,
    ctx: &Context,
) -> Result<ObjectMeta, Error> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let describe = format!("Secret/{name}");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_metadata_opt(name)
        .await
        .map_err(api("get", describe.clone()))?;
    if let Some(existing) = existing {
        return Ok(existing.metadata);
    }
    let mut made = secret.clone();
    fill(&mut made, tenant, ca_pin)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, &made).await {
        Ok(created) => {
            tracing::info!(tenant, secret = name, "generated");
            Ok(created.metadata)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let theirs = secrets
                .get_metadata(name)
                .await
                .map_err(api("get", describe))?;
            Ok(theirs.metadata)
        }
        Err(error) => Err(api("create", describe)(error)),
    }
}

/// Gives generated Secret `secret` of `tenant` new keys, under the keys the pods mount, and
/// the annotations that describe them.
pub(crate) fn fill(secret: &mut Secret, tenant: &str, ca_pin: Option<&str>) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let failed = |message: String| Error::Generate {
        secret: name.clone(),
        message,
    };
    let pair = |cert: &str, key: &str, made: CaPem| {
        BTreeMap::from([
            (cert.to_owned(), ByteString(made.cert.into_bytes())),
            (key.to_owned(), ByteString(made.key.into_bytes())),
        ])
    };
    let (data, annotations) = match name.as_str() {
        names::TUNNEL_CA_SECRET => {
            let made = TunnelCa::generate_pem(tenant).map_err(|e| failed(e.to_string()))?;
            let pin = ca_pin_of_pem(&made.cert)
                .ok_or_else(|| failed("the new CA certificate does not parse".into()))?;
            let annotations = BTreeMap::from([(enrollment::CA_PIN.into(), pin)]);
            (pair("ca.pem", "ca.key", made), annotations)
        }
        names::INTERCEPTION_CA_SECRET => {
            let made = InterceptionCa::generate_pem().map_err(|e| failed(e.to_string()))?;
            (pair("tls.crt", "tls.key", made), BTreeMap::new())
        }
        names::ENROLLMENT_SECRET => {
            let pin = ca_pin.ok_or_else(|| {
                failed(format!(
                    "Secret {} carries no {} annotation to pin the token to; delete both Secrets and the operator makes them anew",
                    names::TUNNEL_CA_SECRET,
                    enrollment::CA_PIN
                ))
            })?;
            let connector = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(enrollment::CONNECTOR))
                .cloned()
                .unwrap_or_default();
            let minted = enrollment::mint(&connector, pin, Timestamp::now())
                .map_err(|e| failed(e.to_string()))?;
            (minted.data, minted.annotations)
        }
        // Empty: the dataplanes record each certificate they sign.
        names::GENERATIONS_SECRET => (BTreeMap::new(), BTreeMap::new()),
        other => {
            return Err(failed(format!(
                "the operator has no keys to make for {other}"
            )));
        }
    };
    secret.data = Some(data);
    secret
        .metadata
        .annotations
        .get_or_insert_default()
        .extend(annotations);
    Ok(())
}
