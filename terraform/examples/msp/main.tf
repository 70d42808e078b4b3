# An MSP's imgate: one EKS cluster with imgate installed, and two customer firms, each with
# its own WORM archive bucket, key and dataplane role. Ends in the Tenant manifests to apply:
#   terraform output -raw tenant_manifests | kubectl apply -f -
terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 2.12, < 3.0"
    }
  }
}

provider "aws" {
  region = var.region
}

provider "aws" {
  alias  = "replica"
  region = var.replica_region
}

provider "helm" {
  kubernetes {
    host                   = module.cluster.cluster_endpoint
    cluster_ca_certificate = base64decode(module.cluster.cluster_ca_certificate)
    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.cluster.cluster_name, "--region", var.region]
    }
  }
}

module "cluster" {
  source              = "../../modules/cluster"
  name                = var.cluster_name
  subnet_ids          = var.subnet_ids
  public_access_cidrs = var.admin_cidrs
  imgate_chart        = var.imgate_chart
}

module "tenant" {
  source   = "../../modules/tenant-archive"
  for_each = var.tenants
  providers = {
    aws         = aws
    aws.replica = aws.replica
  }
  tenant           = each.key
  retention_days   = each.value.retention_days
  retention_mode   = each.value.retention_mode
  eks_cluster_name = module.cluster.cluster_name
}

locals {
  tenant_manifests = {
    for name, tenant in var.tenants : name => {
      apiVersion = "imgate.io/v1alpha1"
      kind       = "Tenant"
      metadata   = { name = name }
      spec = {
        displayName = tenant.display_name
        dataplane   = { replicas = { min = tenant.replicas_min, max = tenant.replicas_max } }
        archive     = module.tenant[name].tenant_archive
      }
    }
  }
}
