//! Objects as a YAML stream that `kubectl apply -f -` and reviewers read.
//!
//! Invariants: each object is one document, in the order given, and parses back into the
//! same JSON ([`crate::check`] proves it for every kind the operator makes); a Secret whose
//! keys the operator generates in the cluster is not printed, only named in a comment, since
//! without its keys the API server would refuse it (a `kubernetes.io/tls` Secret needs
//! `tls.crt` and `tls.key`) or, worse, accept it empty and keep the operator from ever making
//! the keys; so the stream applies as it is.

use crate::desired::Object;

/// The objects as YAML documents, each opened by `---`.
pub fn yaml(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|object| {
            if object.generated_secret().is_some() {
                let meta = object.meta();
                return format!(
                    "---\n# Secret {}/{}: made once by the operator in the cluster, with keys that are never printed\n",
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                );
            }
            let body = serde_saphyr::to_string(&object.to_json()).unwrap_or_default();
            format!("---\n{body}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_yaml;
    use crate::examples::{policies, tenant};
    use crate::policy::PolicySet;
    use crate::{Settings, desired};

    #[test]
    fn render_output_applies_as_it_is() {
        let tenant = tenant("small-firm/tenant.yaml");
        let set = PolicySet::build("harbor-dental", &policies(&["small-firm/policy.yaml"]))
            .expect("compiles");
        let objects = desired(&tenant, Some(&set), &Settings::default());
        let text = yaml(&objects);
        let generated = objects
            .iter()
            .filter(|o| o.generated_secret().is_some())
            .count();
        assert_eq!(
            generated, 4,
            "tunnel CA, interception CA, enrollment token, connector certificates"
        );
        assert_eq!(
            check_yaml(&text),
            Ok(objects.len() - generated),
            "every printed object is valid"
        );
        assert!(!text.contains("kind: Secret"), "{text}");
        assert!(
            text.contains(
                "# Secret imgate-harbor-dental/interception-ca: made once by the operator"
            ),
            "{text}"
        );
    }
}
