data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  bucket    = coalesce(var.bucket_name, "imgate-${var.tenant}-archive-${data.aws_caller_identity.current.account_id}")
  namespace = coalesce(var.namespace, var.tenant)
  tags      = merge(var.tags, { "imgate.io/tenant" = var.tenant })
}

# One key per tenant: revoking it makes the tenant's archive unreadable and nobody else's.
resource "aws_kms_key" "archive" {
  description             = "imgate archive of tenant ${var.tenant}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = local.tags
}

resource "aws_kms_alias" "archive" {
  name          = "alias/imgate-${var.tenant}-archive"
  target_key_id = aws_kms_key.archive.key_id
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy's "*" resource is the key itself; this is AWS's default statement letting the account's IAM policies govern the key.
  #checkov:skip=CKV_AWS_111:As above: the statement is scoped to this key by being its key policy.
  #checkov:skip=CKV_AWS_356:As above: "*" in a key policy means this key only.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_s3_bucket" "archive" {
  bucket              = local.bucket
  object_lock_enabled = true
  tags                = local.tags
  # Records under Object Lock outlive any plan: never let Terraform delete the bucket.
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "archive" {
  bucket = aws_s3_bucket.archive.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    default_retention {
      mode = var.retention_mode
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.archive]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.archive.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "archive" {
  bucket                  = aws_s3_bucket.archive.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "archive" {
  bucket        = aws_s3_bucket.archive.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/"
}

resource "aws_s3_bucket_policy" "archive" {
  bucket     = aws_s3_bucket.archive.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.archive]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "RefuseRequestsWithoutTLS"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.archive.arn, "${aws_s3_bucket.archive.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
  statement {
    sid       = "RefusePutsNotEncryptedWithKms"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "StringNotEquals"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }
  statement {
    sid       = "RefuseBypassingGovernanceRetention"
    effect    = "Deny"
    actions   = ["s3:BypassGovernanceRetention"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  dynamic "rule" {
    for_each = var.accessible_days == null ? [] : [var.accessible_days]
    content {
      id     = "colder-after-accessible-period"
      status = "Enabled"
      filter {}
      transition {
        days          = rule.value
        storage_class = var.cold_storage_class
      }
      noncurrent_version_transition {
        noncurrent_days = rule.value
        storage_class   = var.cold_storage_class
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.archive]
}

# Object events go to EventBridge, where an MSP can alert on unexpected writers or deletes.
resource "aws_s3_bucket_notification" "archive" {
  bucket      = aws_s3_bucket.archive.id
  eventbridge = true
}
