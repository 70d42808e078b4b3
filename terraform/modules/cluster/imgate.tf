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

# The control plane's network interfaces, and so the API server's endpoints as pods see
# them, are in the cluster's subnets: the dataplanes' network policy lets them reach the
# API server there and at no other address in the VPC.
data "aws_subnet" "cluster" {
  for_each = toset(var.subnet_ids)
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
