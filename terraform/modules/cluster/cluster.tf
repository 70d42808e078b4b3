data "aws_partition" "current" {}

locals {
  cluster_name     = var.create_cluster ? aws_eks_cluster.this[0].name : data.aws_eks_cluster.existing[0].name
  cluster_endpoint = var.create_cluster ? aws_eks_cluster.this[0].endpoint : data.aws_eks_cluster.existing[0].endpoint
  cluster_ca       = var.create_cluster ? aws_eks_cluster.this[0].certificate_authority[0].data : data.aws_eks_cluster.existing[0].certificate_authority[0].data
  tags             = merge(var.tags, { "imgate.io/cluster" = var.name })
}

data "aws_eks_cluster" "existing" {
  count = var.create_cluster ? 0 : 1
  name  = var.name
}

resource "aws_kms_key" "secrets" {
  count                   = var.create_cluster ? 1 : 0
  description             = "Kubernetes Secrets of cluster ${var.name} (tunnel and interception CAs)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.secrets_key.json
  tags                    = local.tags
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "secrets_key" {
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

resource "aws_iam_role" "cluster" {
  count              = var.create_cluster ? 1 : 0
  name               = "${var.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "cluster_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "cluster" {
  count      = var.create_cluster ? 1 : 0
  role       = aws_iam_role.cluster[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  count                     = var.create_cluster ? 1 : 0
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = aws_iam_role.cluster[0].arn
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.public_access_cidrs) > 0
    public_access_cidrs     = length(var.public_access_cidrs) > 0 ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.secrets[0].arn
    }
  }

  access_config {
    authentication_mode = "API"
  }

  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_eks_addon" "this" {
  for_each     = var.create_cluster ? toset(["vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent"]) : toset([])
  cluster_name = aws_eks_cluster.this[0].name
  addon_name   = each.value
  tags         = local.tags
}
