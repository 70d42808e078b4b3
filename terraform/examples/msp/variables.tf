variable "region" {
  description = "The cluster's and the archives' region."
  type        = string
  default     = "eu-west-2"
}

variable "replica_region" {
  description = "Region of the archives' backup copies."
  type        = string
  default     = "eu-west-1"
}

variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string
  default     = "imgate-msp"
}

variable "subnet_ids" {
  description = "Private subnets for the cluster and its nodes."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API."
  type        = list(string)
  default     = []
}

variable "imgate_chart" {
  description = "The imgate chart (path or OCI reference)."
  type        = string
  default     = "../../../charts/imgate"
}

variable "tenants" {
  description = "The MSP's customers."
  type = map(object({
    display_name   = string
    retention_days = number
    retention_mode = string
    replicas_min   = number
    replicas_max   = number
  }))
  default = {
    meridian-capital = {
      display_name   = "Meridian Capital Markets LLC"
      retention_days = 2192
      retention_mode = "COMPLIANCE"
      replicas_min   = 2
      replicas_max   = 20
    }
    harbor-dental = {
      display_name   = "Harbor Dental Group"
      retention_days = 2557
      retention_mode = "GOVERNANCE"
      replicas_min   = 1
      replicas_max   = 2
    }
  }
}
