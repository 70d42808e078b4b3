variable "name" {
  description = "Name of the EKS cluster to create, or of the existing cluster to install imgate into."
  type        = string
}

variable "create_cluster" {
  description = "Create the cluster; false installs imgate into the existing cluster called name."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "Kubernetes version of a new cluster."
  type        = string
  default     = "1.33"
}

variable "subnet_ids" {
  description = "Private subnets (at least two zones) for the control plane and the dataplane nodes."
  type        = list(string)
}

variable "public_access_cidrs" {
  description = "CIDRs that may reach the Kubernetes API from outside the VPC; empty keeps the endpoint private."
  type        = list(string)
  default     = []
}

variable "node_group_enabled" {
  description = "Create the dataplane node group (also for an existing cluster)."
  type        = bool
  default     = true
}

variable "node_instance_types" {
  description = "Instance types for dataplane nodes. Dataplanes are network- and CPU-bound; compute-optimised types fit."
  type        = list(string)
  default     = ["c7i.large", "c6i.large"]
}

variable "node_min" {
  description = "Fewest dataplane nodes."
  type        = number
  default     = 2
}

variable "node_max" {
  description = "Most dataplane nodes."
  type        = number
  default     = 20
}

variable "node_desired" {
  description = "Initial number of dataplane nodes (later managed by the cluster autoscaler or Karpenter, if installed)."
  type        = number
  default     = 3
}

variable "install_load_balancer_controller" {
  description = "Install the AWS Load Balancer Controller, which gives tunnel Services their UDP load balancers (false when the cluster already runs it)."
  type        = bool
  default     = true
}

variable "imgate_chart" {
  description = "The imgate Helm chart: a path to charts/imgate, or an OCI reference."
  type        = string
  default     = "oci://ghcr.io/imgate/charts/imgate"
}

variable "imgate_chart_version" {
  description = "Chart version (null for the path's version or the latest)."
  type        = string
  default     = null
}

variable "imgate_values" {
  description = "Extra values for the imgate chart, merged over the module's."
  type        = any
  default     = {}
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
