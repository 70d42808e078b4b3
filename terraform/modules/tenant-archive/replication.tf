# The backup copy SEC 17a-4 asks for: every object replicated, with its Object Lock retention,
# to a bucket in a second region under a key of its own.
data "aws_region" "replica" {
  provider = aws.replica
}

resource "aws_kms_key" "replica" {
  count                   = var.replication_enabled ? 1 : 0
  provider                = aws.replica
  description             = "imgate archive replica of tenant ${var.tenant}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = local.tags
}

resource "aws_s3_bucket" "replica" {
  #checkov:skip=CKV_AWS_144:This bucket is itself the cross-region copy.
  #checkov:skip=CKV2_AWS_62:The replica is read only when the primary region is lost; nothing consumes its events.
  #checkov:skip=CKV_AWS_18:The replica receives only S3 replication writes; access to it is audited through CloudTrail data events.
  count               = var.replication_enabled ? 1 : 0
  provider            = aws.replica
  bucket              = "${local.bucket}-replica"
  object_lock_enabled = true
  tags                = local.tags
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "replica" {
  count    = var.replication_enabled ? 1 : 0
  provider = aws.replica
  bucket   = aws_s3_bucket.replica[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "replica" {
  count    = var.replication_enabled ? 1 : 0
  provider = aws.replica
  bucket   = aws_s3_bucket.replica[0].id
  rule {
    default_retention {
      mode = var.retention_mode
      days = var.retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.replica]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "replica" {
  count    = var.replication_enabled ? 1 : 0
  provider = aws.replica
  bucket   = aws_s3_bucket.replica[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.replica[0].arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "replica" {
  count                   = var.replication_enabled ? 1 : 0
  provider                = aws.replica
  bucket                  = aws_s3_bucket.replica[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "replica" {
  count    = var.replication_enabled ? 1 : 0
  provider = aws.replica
  bucket   = aws_s3_bucket.replica[0].id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
  depends_on = [aws_s3_bucket_versioning.replica]
}

resource "aws_iam_role" "replication" {
  count              = var.replication_enabled ? 1 : 0
  name               = "imgate-${var.tenant}-archive-replication"
  assume_role_policy = data.aws_iam_policy_document.replication_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "replication_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "replication" {
  count  = var.replication_enabled ? 1 : 0
  name   = "replicate-archive"
  role   = aws_iam_role.replication[0].id
  policy = data.aws_iam_policy_document.replication[0].json
}

data "aws_iam_policy_document" "replication" {
  count = var.replication_enabled ? 1 : 0
  statement {
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = [aws_s3_bucket.archive.arn]
  }
  statement {
    actions = [
      "s3:GetObjectVersionForReplication",
      "s3:GetObjectVersionAcl",
      "s3:GetObjectVersionTagging",
      "s3:GetObjectRetention",
      "s3:GetObjectLegalHold",
    ]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }
  statement {
    actions = [
      "s3:ReplicateObject",
      "s3:ReplicateTags",
      "s3:ObjectOwnerOverrideToBucketOwner",
    ]
    resources = ["${aws_s3_bucket.replica[0].arn}/*"]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.archive.arn]
  }
  statement {
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.replica[0].arn]
  }
}

resource "aws_s3_bucket_replication_configuration" "archive" {
  count  = var.replication_enabled ? 1 : 0
  bucket = aws_s3_bucket.archive.id
  role   = aws_iam_role.replication[0].arn
  rule {
    id     = "backup-copy"
    status = "Enabled"
    filter {}
    delete_marker_replication {
      status = "Disabled"
    }
    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }
    destination {
      bucket = aws_s3_bucket.replica[0].arn
      encryption_configuration {
        replica_kms_key_id = aws_kms_key.replica[0].arn
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.archive, aws_s3_bucket_versioning.replica]
}
