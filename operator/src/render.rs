//! Objects as a YAML stream that `kubectl apply -f -` and reviewers read.
//!
//! Invariant: each object is one document, in the order given, and parses back into the
//! same JSON ([`crate::check`] proves it for every kind the operator makes).

use crate::desired::Object;

/// The objects as YAML documents, each opened by `---`.
pub fn yaml(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|object| {
            let body = serde_saphyr::to_string(&object.to_json()).unwrap_or_default();
            format!("---\n{body}")
        })
        .collect()
}
