//! Writing a tenant's desired objects: server-side apply for everything the operator keeps in
//! shape, create-once for the Secrets whose keys it generates.
//!
//! Invariants: each apply is forced with the operator's field manager (drift is undone);
//! a generated Secret is read by metadata only (its keys never pass through the operator
//! again) and created only when absent; `409 AlreadyExists` on that create means another
//! replica won the race and its keys stand.

use std::collections::BTreeMap;

use imgate_dataplane::proxy::tls::{CaPem, InterceptionCa};
use imgate_dataplane::tunnel::trust::TunnelCa;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

use super::{Context, Error, api};
use crate::desired::Object;
use crate::names::{self, FIELD_MANAGER};

/// What the API server returned for the objects a Tenant's status is read from.
#[derive(Debug, Default)]
pub struct Applied {
    /// The tunnel Service, with its load balancer's address once it has one.
    pub tunnel_service: Value,
    /// The dataplanes' StatefulSet, with its replica counts.
    pub stateful_set: Value,
}

/// Writes `objects` of tenant `tenant` front to back.
pub async fn apply_all(objects: &[Object], tenant: &str, ctx: &Context) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    for object in objects {
        if let Some(secret) = object.generated_secret() {
            create_once(secret, tenant, ctx).await?;
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

/// Creates generated Secret `secret` of `tenant` with new keys, unless it exists.
async fn create_once(secret: &Secret, tenant: &str, ctx: &Context) -> Result<(), Error> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let describe = format!("Secret/{name}");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_metadata_opt(name)
        .await
        .map_err(api("get", describe.clone()))?;
    if existing.is_some() {
        return Ok(());
    }
    let mut made = secret.clone();
    made.data = Some(keys(name, tenant)?);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, &made).await {
        Ok(_) => {
            tracing::info!(tenant, secret = name, "generated");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
        Err(error) => Err(api("create", describe)(error)),
    }
}

/// New keys for generated Secret `name` of `tenant`, under the keys the pods mount.
fn keys(name: &str, tenant: &str) -> Result<BTreeMap<String, ByteString>, Error> {
    let failed = |message: String| Error::Generate {
        secret: name.into(),
        message,
    };
    let pair = |cert: &str, key: &str, made: CaPem| {
        BTreeMap::from([
            (cert.to_owned(), ByteString(made.cert.into_bytes())),
            (key.to_owned(), ByteString(made.key.into_bytes())),
        ])
    };
    match name {
        names::TUNNEL_CA_SECRET => TunnelCa::generate_pem(tenant)
            .map(|made| pair("ca.pem", "ca.key", made))
            .map_err(|e| failed(e.to_string())),
        names::INTERCEPTION_CA_SECRET => InterceptionCa::generate_pem()
            .map(|made| pair("tls.crt", "tls.key", made))
            .map_err(|e| failed(e.to_string())),
        other => Err(failed(format!(
            "the operator has no keys to make for {other}"
        ))),
    }
}
