//! The CustomResourceDefinitions generated from the Rust types, and their YAML as checked in
//! under `crds/` and in the Helm chart (`charts/imgate/crds/`, which Helm installs before
//! the operator).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

use crate::{IMPolicy, Tenant};

const HEADER: &str = "# Generated from the Rust types in crds/src by `imgate crds`. Do not edit.\n";

/// Every imgate CRD, in install order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![tenant_crd(), IMPolicy::crd()]
}

/// The Tenant CRD, its schema bounding `metadata.name` to
/// [`TENANT_NAME_MAX`](crate::tenant::TENANT_NAME_MAX) characters: the one restriction on
/// `metadata` a CRD may make, which the API server reports at `metadata.name` (a CEL rule on
/// the root would report no field).
fn tenant_crd() -> CustomResourceDefinition {
    let mut crd = Tenant::crd();
    let schema = crd
        .spec
        .versions
        .iter_mut()
        .filter_map(|version| version.schema.as_mut())
        .filter_map(|schema| schema.open_api_v3_schema.as_mut());
    for root in schema {
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            max_length: Some(crate::tenant::TENANT_NAME_MAX as i64),
            ..JSONSchemaProps::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_owned(), name)].into()),
            ..JSONSchemaProps::default()
        };
        root.properties
            .get_or_insert_default()
            .insert("metadata".into(), metadata);
    }
    crd
}

/// One CRD as YAML, with the header that marks it generated.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).unwrap_or_else(|error| {
        unreachable!("a CustomResourceDefinition always serializes to YAML: {error}")
    });
    format!("{HEADER}{body}")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Where a CRD's YAML is checked in: beside the types, and in the chart.
    fn checked_in(crd: &CustomResourceDefinition) -> [PathBuf; 2] {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let file = format!("{name}.yaml");
        [
            here.join(&file),
            here.join("../charts/imgate/crds").join(&file),
        ]
    }

    /// The YAML under `crds/` and in the chart is what the types generate. Run with
    /// `IMGATE_UPDATE_CRDS=1` to rewrite it after changing the types.
    #[test]
    fn checked_in_yaml_matches_types() {
        let update = std::env::var_os("IMGATE_UPDATE_CRDS").is_some();
        for crd in crds() {
            let generated = crd_yaml(&crd);
            for path in checked_in(&crd) {
                if update {
                    std::fs::write(&path, &generated).expect("write CRD YAML");
                    continue;
                }
                let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    on_disk == generated,
                    "{} is out of date with the types in crds/src; regenerate it with \
                 `IMGATE_UPDATE_CRDS=1 cargo test -p imgate-crds` and commit the result",
                    path.display()
                );
            }
        }
    }

    /// The schemas are structural: no `$ref`, and every property has a type unless it is
    /// explicitly int-or-string or preserves unknown fields (what a real API server demands).
    #[test]
    fn schemas_are_structural() {
        fn walk(node: &serde_json::Value, path: &str) {
            let Some(object) = node.as_object() else {
                return;
            };
            assert!(!object.contains_key("$ref"), "$ref at {path}");
            let exempt = object.contains_key("x-kubernetes-int-or-string")
                || object.contains_key("x-kubernetes-preserve-unknown-fields");
            assert!(exempt || object.contains_key("type"), "no type at {path}");
            for (key, child) in object {
                match key.as_str() {
                    "properties" => {
                        for (name, property) in child.as_object().into_iter().flatten() {
                            walk(property, &format!("{path}.{name}"));
                        }
                    }
                    "items" | "additionalProperties" => walk(child, &format!("{path}[]")),
                    "oneOf" | "anyOf" | "allOf" => {
                        panic!("{key} at {path}: keep schemas free of alternatives")
                    }
                    _ => {}
                }
            }
        }
        for crd in crds() {
            let version = &crd.spec.versions[0];
            assert!(version.served && version.storage);
            let subresources = version.subresources.as_ref().expect("subresources");
            assert!(subresources.status.is_some(), "status subresource");
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let schema = serde_json::to_value(schema.expect("schema")).expect("json");
            walk(&schema, &crd.spec.names.kind);
        }
    }

    /// CEL rules stay within the API server's cost budget: below any node that carries rules,
    /// every list has `maxItems` and every string in a list has `maxLength` or an `enum`
    /// (otherwise: "estimated rule cost exceeds budget").
    #[test]
    fn cel_rules_have_bounded_inputs() {
        fn bounded(node: &serde_json::Value, path: &str, in_list: bool) {
            let Some(object) = node.as_object() else {
                return;
            };
            match object.get("type").and_then(|t| t.as_str()) {
                Some("array") => assert!(object.contains_key("maxItems"), "no maxItems at {path}"),
                Some("string") if in_list => {
                    // The API server bounds an enum string by its longest value.
                    assert!(
                        object.contains_key("maxLength") || object.contains_key("enum"),
                        "no maxLength at {path}"
                    )
                }
                _ => {}
            }
            for (name, property) in object
                .get("properties")
                .and_then(|p| p.as_object())
                .into_iter()
                .flatten()
            {
                bounded(property, &format!("{path}.{name}"), false);
            }
            if let Some(items) = object.get("items") {
                bounded(items, &format!("{path}[]"), true);
            }
        }
        fn find_rules(node: &serde_json::Value, path: &str, found: &mut usize) {
            let Some(object) = node.as_object() else {
                return;
            };
            if object.contains_key("x-kubernetes-validations") {
                *found += 1;
                // The root rules read only `metadata.name`, which the API server bounds.
                if path.contains('.') {
                    bounded(node, path, false);
                }
            }
            for (name, property) in object
                .get("properties")
                .and_then(|p| p.as_object())
                .into_iter()
                .flatten()
            {
                find_rules(property, &format!("{path}.{name}"), found);
            }
            if let Some(items) = object.get("items") {
                find_rules(items, &format!("{path}[]"), found);
            }
        }
        let mut found = 0;
        for crd in crds() {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let schema = serde_json::to_value(schema.expect("schema")).expect("json");
            find_rules(&schema, &crd.spec.names.kind, &mut found);
        }
        assert!(
            found >= 6,
            "expected the CEL rules of both kinds, found {found}"
        );
    }

    #[test]
    fn kubectl_get_is_useful() {
        for crd in crds() {
            let names = &crd.spec.names;
            assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
            assert_eq!(
                names.categories.as_deref(),
                Some(&["imgate".to_owned()][..])
            );
            let columns = crd.spec.versions[0].additional_printer_columns.as_ref();
            let columns: Vec<_> = columns
                .expect("printer columns")
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert!(columns.contains(&"Age"), "{columns:?}");
        }
        assert_eq!(Tenant::crd().spec.scope, "Cluster");
        assert_eq!(IMPolicy::crd().spec.scope, "Namespaced");
    }
}
