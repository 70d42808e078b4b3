# Nodes for tenant dataplanes, labelled so the operator's StatefulSets can select them.
resource "aws_iam_role" "nodes" {
  count              = var.node_group_enabled ? 1 : 0
  name               = "${var.name}-dataplane-nodes"
  assume_role_policy = data.aws_iam_policy_document.nodes_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "nodes_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "nodes" {
  for_each   = var.node_group_enabled ? toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]) : toset([])
  role       = aws_iam_role.nodes[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_node_group" "dataplanes" {
  count           = var.node_group_enabled ? 1 : 0
  cluster_name    = local.cluster_name
  node_group_name = "imgate-dataplanes"
  node_role_arn   = aws_iam_role.nodes[0].arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.node_instance_types
  capacity_type   = "ON_DEMAND"

  scaling_config {
    min_size     = var.node_min
    max_size     = var.node_max
    desired_size = var.node_desired
  }

  update_config {
    max_unavailable = 1
  }

  labels = {
    "imgate.io/role" = "dataplane"
  }

  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.nodes]

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
}
