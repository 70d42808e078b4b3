//! The Terraform example's outputs become Tenant manifests that the API accepts: the test
//! reads a fixture shaped like `terraform output -json` of `terraform/examples/msp`, builds
//! each Tenant the way the example's `tenant_manifests` output does, and checks it against
//! the Tenant type and schema in `crds/`.

use std::path::PathBuf;

use imgate_crds::tenant::ArchiveFailure;
use imgate_crds::{ResourceKind, Tenant, validate_object};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_outputs_make_valid_tenants() {
    let outputs: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("terraform/examples/msp/testdata/outputs.json"))
            .expect("fixture"),
    )
    .expect("JSON");
    let archives = outputs["tenant_archives"]["value"]
        .as_object()
        .expect("tenant_archives is a map of tenant to archive section");
    assert_eq!(archives.len(), 2, "the example has two tenants");
    for (name, archive) in archives {
        let manifest = json!({
            "apiVersion": "imgate.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"archive": archive},
        });
        let errors = validate_object(ResourceKind::Tenant, &manifest);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let tenant: Tenant = serde_json::from_value(manifest).expect("decodes as the Tenant type");
        assert_eq!(
            tenant.spec.archive.on_archive_failure,
            ArchiveFailure::Block
        );
        assert!(
            tenant
                .spec
                .archive
                .s3
                .role_arn
                .as_deref()
                .is_some_and(|arn| arn.ends_with(&format!("imgate-{name}-dataplane")))
        );
        assert!(tenant.spec.archive.s3.encryption.kms_key_id.is_some());
    }
}

/// The fixture has the shape the module really outputs: the same keys, in the Tenant's
/// spelling, as `modules/tenant-archive/outputs.tf` writes them.
#[test]
fn fixture_matches_the_module_output() {
    let outputs_tf =
        std::fs::read_to_string(root().join("terraform/modules/tenant-archive/outputs.tf"))
            .expect("outputs.tf");
    for key in [
        "s3 = {",
        "bucket     = aws_s3_bucket.archive.id",
        "roleArn    = aws_iam_role.dataplane.arn",
        "kmsKeyId = aws_kms_key.archive.arn",
        "retention        = { days = var.retention_days, mode = lower(var.retention_mode) }",
        "onArchiveFailure = \"block\"",
    ] {
        assert!(
            outputs_tf.contains(key),
            "modules/tenant-archive/outputs.tf no longer writes {key:?}: update the fixture and this test"
        );
    }
    let example =
        std::fs::read_to_string(root().join("terraform/examples/msp/main.tf")).expect("main.tf");
    assert!(
        example.contains("archive     = module.tenant[name].tenant_archive"),
        "the example builds spec.archive from the module output"
    );
}
