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
      }
    }),
    yamlencode(var.imgate_values),
  ]
  depends_on = [helm_release.lb_controller]
}
