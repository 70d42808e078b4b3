//! Status conditions in the standard Kubernetes shape (`metav1.Condition`), kept as a
//! list-map keyed by `type`, so that the API server rejects two conditions of one type and
//! server-side apply merges them by type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{Schema, SchemaGenerator};

/// The most conditions a status may carry; bounds the cost of CEL rules over the list.
pub const MAX_CONDITIONS: u64 = 16;

/// Schema for a `conditions` field: `[]metav1.Condition` as a list-map keyed by `type`.
pub fn schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema.insert("maxItems".into(), MAX_CONDITIONS.into());
    schema
}
