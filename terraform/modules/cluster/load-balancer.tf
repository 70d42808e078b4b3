# Tunnels arrive over UDP (QUIC). The AWS Load Balancer Controller turns each tenant's tunnel
# Service into a UDP Network Load Balancer that targets dataplane pods directly.
resource "aws_iam_role" "lb_controller" {
  count              = var.install_load_balancer_controller ? 1 : 0
  name               = "${var.name}-aws-load-balancer-controller"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_trust.json
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

resource "aws_iam_role_policy" "lb_controller" {
  count  = var.install_load_balancer_controller ? 1 : 0
  name   = "aws-load-balancer-controller"
  role   = aws_iam_role.lb_controller[0].id
  policy = data.aws_iam_policy_document.lb_controller.json
}

data "aws_iam_policy_document" "lb_controller" {
  #checkov:skip=CKV_AWS_356:Describe calls and creating load balancers cannot be scoped to resources that do not exist yet; what the controller creates is tagged and the mutating statements below are scoped by that tag.
  #checkov:skip=CKV_AWS_111:As above; the write statements are constrained by the elbv2.k8s.aws/cluster resource tag.
  statement {
    sid       = "LinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["elasticloadbalancing.amazonaws.com"]
    }
  }
  statement {
    sid = "Describe"
    actions = [
      "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
      "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections",
      "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeInstances",
      "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:GetSecurityGroupsForVpc",
      "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
      "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerAttributes",
      "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
      "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags",
      "elasticloadbalancing:DescribeCapacityReservation",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "CreateTagged"
    actions   = ["ec2:CreateSecurityGroup", "elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup", "ec2:CreateTags", "elasticloadbalancing:AddTags"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = [local.cluster_name]
    }
  }
  statement {
    sid = "ManageOwn"
    actions = [
      "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
      "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetSubnets",
      "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:DeleteLoadBalancer",
      "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
      "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:RegisterTargets",
      "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:CreateListener",
      "elasticloadbalancing:DeleteListener", "elasticloadbalancing:ModifyListener",
      "elasticloadbalancing:RemoveTags", "ec2:DeleteTags",
    ]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/elbv2.k8s.aws/cluster"
      values   = [local.cluster_name]
    }
  }
}

resource "aws_eks_pod_identity_association" "lb_controller" {
  count           = var.install_load_balancer_controller ? 1 : 0
  cluster_name    = local.cluster_name
  namespace       = "kube-system"
  service_account = "aws-load-balancer-controller"
  role_arn        = aws_iam_role.lb_controller[0].arn
  depends_on      = [aws_eks_addon.this]
}

resource "helm_release" "lb_controller" {
  count      = var.install_load_balancer_controller ? 1 : 0
  name       = "aws-load-balancer-controller"
  namespace  = "kube-system"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  values = [yamlencode({
    clusterName    = local.cluster_name
    serviceAccount = { create = true, name = "aws-load-balancer-controller" }
  })]
  depends_on = [aws_eks_pod_identity_association.lb_controller, aws_eks_node_group.dataplanes]
}
