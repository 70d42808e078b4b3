locals {
  # What the operator puts on every tenant's tunnel Service: an internet-facing UDP NLB that
  # targets pods directly and keeps client addresses.
  tunnel_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"            = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type" = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"          = "internet-facing"
    "service.beta.kubernetes.io/aws-load-balancer-attributes"      = "load_balancing.cross_zone.enabled=true"
  }
}

# EKS places the control plane's network interfaces, and so the API server's endpoints as
# pods see them, in the cluster's subnets: the dataplanes' network policy opens the API
# server's ports (443, 6443) to those subnets' ranges. Nodes and (with the VPC CNI) pods in
# the same subnets are reachable on those ports too; to narrow it to the endpoints' own
# addresses, set dataplane.apiServerCIDRs in imgate_values.
data "aws_subnet" "cluster" {
  for_each = toset(var.create_cluster ? var.subnet_ids : tolist(data.aws_eks_cluster.existing[0].vpc_config[0].subnet_ids))
  id       = each.value
}

resource "helm_release" "imgate" {
  name             = "imgate"
  namespace        = "imgate-system"
  create_namespace = true
  chart            = var.imgate_chart
  version          = var.imgate_chart_version
  values = [
    yamlencode({
      dataplane = {
        nodeSelector             = { "imgate.io/role" = "dataplane" }
        tunnelServiceAnnotations = local.tunnel_service_annotations
        apiServerCIDRs           = sort([for subnet in data.aws_subnet.cluster : subnet.cidr_block])
      }
    }),
    yamlencode(var.imgate_values),
  ]
  depends_on = [helm_release.lb_controller]
}
