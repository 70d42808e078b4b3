output "cluster_name" {
  description = "The EKS cluster."
  value       = local.cluster_name
}

output "cluster_endpoint" {
  description = "The Kubernetes API endpoint."
  value       = local.cluster_endpoint
}

output "cluster_ca_certificate" {
  description = "The cluster's CA certificate, base64."
  value       = local.cluster_ca
}

output "tunnel_service_annotations" {
  description = "Annotations that give a tunnel Service its UDP load balancer."
  value       = local.tunnel_service_annotations
}
