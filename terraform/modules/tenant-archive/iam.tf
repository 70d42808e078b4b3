# The role the tenant's dataplanes use: they may write records, set retention and legal hold,
# and read back (for verify and export). They may never delete a record, bypass or shorten
# retention, or change the bucket's protections.
locals {
  pod_identity = var.eks_cluster_name != null
}

resource "aws_iam_role" "dataplane" {
  name               = "imgate-${var.tenant}-dataplane"
  assume_role_policy = local.pod_identity ? data.aws_iam_policy_document.pod_identity_trust.json : data.aws_iam_policy_document.irsa_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "pod_identity_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "irsa_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [coalesce(var.oidc_provider_arn, "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:oidc-provider/unset")]
    }
    condition {
      test     = "StringEquals"
      variable = "${coalesce(var.oidc_provider_url, "unset")}:sub"
      values   = ["system:serviceaccount:${local.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${coalesce(var.oidc_provider_url, "unset")}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_eks_pod_identity_association" "dataplane" {
  count           = local.pod_identity ? 1 : 0
  cluster_name    = var.eks_cluster_name
  namespace       = local.namespace
  service_account = var.service_account
  role_arn        = aws_iam_role.dataplane.arn
}

resource "aws_iam_role_policy" "dataplane" {
  name   = "archive-write-only"
  role   = aws_iam_role.dataplane.id
  policy = data.aws_iam_policy_document.dataplane.json
}

data "aws_iam_policy_document" "dataplane" {
  statement {
    sid = "WriteAndReadRecords"
    actions = [
      "s3:PutObject",
      "s3:PutObjectRetention",
      "s3:PutObjectLegalHold",
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectRetention",
      "s3:GetObjectLegalHold",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.archive.arn}/tenant=${var.tenant}/*"]
  }
  statement {
    sid       = "ListRecords"
    actions   = ["s3:ListBucket", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.archive.arn]
  }
  statement {
    sid       = "EncryptWithTheTenantKey"
    actions   = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"]
    resources = [aws_kms_key.archive.arn]
  }
  statement {
    sid    = "NeverDeleteOrWeaken"
    effect = "Deny"
    actions = [
      "s3:DeleteObject",
      "s3:DeleteObjectVersion",
      "s3:BypassGovernanceRetention",
      "s3:PutBucketObjectLockConfiguration",
      "s3:PutBucketPolicy",
      "s3:DeleteBucketPolicy",
      "s3:PutBucketVersioning",
      "s3:PutLifecycleConfiguration",
      "s3:PutEncryptionConfiguration",
      "s3:DeleteBucket",
    ]
    resources = [aws_s3_bucket.archive.arn, "${aws_s3_bucket.archive.arn}/*"]
  }
}
