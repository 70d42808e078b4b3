output "tenant_archives" {
  description = "Each tenant's archive section (bucket, region, role, key, retention)."
  value       = { for name, tenant in module.tenant : name => tenant.tenant_archive }
}

output "tenant_manifests" {
  description = "The Tenant resources to apply: terraform output -raw tenant_manifests | kubectl apply -f -"
  value       = join("---\n", [for name in sort(keys(local.tenant_manifests)) : yamlencode(local.tenant_manifests[name])])
}
