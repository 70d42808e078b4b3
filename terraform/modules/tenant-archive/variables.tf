variable "tenant" {
  description = "The imgate Tenant name (a DNS label, at most 40 characters)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.tenant))
    error_message = "tenant must be a DNS label of at most 40 characters, like the Tenant resource's name."
  }
}

variable "bucket_name" {
  description = "Name of the archive bucket. Defaults to imgate-<tenant>-archive-<account id>."
  type        = string
  default     = null
}

variable "retention_days" {
  description = "Default Object Lock retention in days (SEC 17a-4: 3 years for communications, 6 for most records; MiFID II: 5 to 7)."
  type        = number
  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 36500
    error_message = "retention_days must be between 1 and 36500."
  }
}

variable "retention_mode" {
  description = "Object Lock mode: COMPLIANCE (nobody can shorten it; what SEC 17a-4(f) needs) or GOVERNANCE."
  type        = string
  default     = "COMPLIANCE"
  validation {
    condition     = contains(["COMPLIANCE", "GOVERNANCE"], var.retention_mode)
    error_message = "retention_mode must be COMPLIANCE or GOVERNANCE."
  }
}

variable "accessible_days" {
  description = "Days records stay in S3 Standard (17a-4: easily accessible for the first two years) before moving to colder storage; null keeps them in Standard."
  type        = number
  default     = 730
}

variable "cold_storage_class" {
  description = "Storage class after accessible_days."
  type        = string
  default     = "GLACIER_IR"
}

variable "replication_enabled" {
  description = "Replicate every object to a bucket in the aws.replica provider's region (17a-4's backup copy)."
  type        = bool
  default     = true
}

variable "access_log_retention_days" {
  description = "Days S3 server access logs are kept."
  type        = number
  default     = 2557
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled KMS key deletion takes effect."
  type        = number
  default     = 30
}

variable "namespace" {
  description = "Kubernetes namespace of the tenant's dataplanes. Defaults to the tenant name."
  type        = string
  default     = null
}

variable "service_account" {
  description = "Service account of the tenant's dataplanes."
  type        = string
  default     = "imgate-dataplane"
}

variable "eks_cluster_name" {
  description = "EKS cluster for an EKS Pod Identity association; null to use IRSA instead."
  type        = string
  default     = null
}

variable "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider ARN, for IRSA (when eks_cluster_name is null)."
  type        = string
  default     = null
}

variable "oidc_provider_url" {
  description = "The cluster's OIDC issuer URL without https://, for IRSA."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
