output "bucket" {
  description = "The archive bucket."
  value       = aws_s3_bucket.archive.id
}

output "region" {
  description = "The archive bucket's region."
  value       = data.aws_region.current.name
}

output "replica_bucket" {
  description = "The cross-region copy, when replication is enabled."
  value       = var.replication_enabled ? aws_s3_bucket.replica[0].id : null
}

output "replica_region" {
  description = "The copy's region, when replication is enabled."
  value       = var.replication_enabled ? data.aws_region.replica.name : null
}

output "kms_key_arn" {
  description = "The tenant's archive key."
  value       = aws_kms_key.archive.arn
}

output "dataplane_role_arn" {
  description = "The IAM role of the tenant's dataplane service account."
  value       = aws_iam_role.dataplane.arn
}

output "tenant_archive" {
  description = "The Tenant resource's spec.archive section, ready to use."
  value = {
    s3 = {
      bucket     = aws_s3_bucket.archive.id
      region     = data.aws_region.current.name
      roleArn    = aws_iam_role.dataplane.arn
      encryption = { mode = "kms", kmsKeyId = aws_kms_key.archive.arn }
    }
    retention        = { days = var.retention_days, mode = lower(var.retention_mode) }
    onArchiveFailure = "block"
  }
}
