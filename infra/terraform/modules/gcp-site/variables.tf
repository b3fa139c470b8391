variable "project_id" {
  description = "Google Cloud project the site is deployed into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 characters of [a-z0-9-])."
  }
}

variable "region" {
  description = "Region the site is deployed to (e.g. europe-west4). The data never leaves it."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west4."
  }
}

variable "site_name" {
  description = "Name of the site in the federation (lower-case letters, digits and hyphens). Prefixes every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.site_name)) && length(var.site_name) >= 3 && length(var.site_name) <= 21
    error_message = "site_name must be 3-21 characters of [a-z0-9] in hyphen-separated words, starting with a letter (service account IDs derived from it allow 30 characters)."
  }
}

variable "audience" {
  description = "Token audience the site accepts: the name of the federation it belongs to (tokens for other federations are refused)."
  type        = string
  default     = "fedflow"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.audience))
    error_message = "audience must be 1-63 characters of [a-z0-9-]."
  }
}

variable "jurisdiction" {
  description = "Legal jurisdiction the site's data falls under (upper-case code such as EU, US, UK); written into the site configuration for jurisdiction rules in the site policy."
  type        = string

  validation {
    condition     = can(regex("^[A-Z]{2,8}$", var.jurisdiction))
    error_message = "jurisdiction must be 2-8 upper-case letters (e.g. EU, US, UK)."
  }
}

variable "datasets" {
  description = "Datasets the site serves: map of dataset name to the blob prefix (folder) inside the data container that holds its parquet tables."
  type        = map(string)

  validation {
    condition     = length(var.datasets) > 0 && alltrue([for name in keys(var.datasets) : can(regex("^[a-z0-9_][a-z0-9_-]*$", name))])
    error_message = "datasets must name at least one dataset; dataset names are [a-z0-9_-]."
  }

  validation {
    condition     = alltrue([for prefix in values(var.datasets) : can(regex("^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$", prefix))])
    error_message = "dataset prefixes are relative blob paths such as omop/v5.4 (no leading or trailing slash, no spaces)."
  }
}

variable "orchestrator_cidrs" {
  description = "Source addresses (CIDR blocks) of the federation orchestrator. Only these reach the site service."
  type        = list(string)

  validation {
    condition     = length(var.orchestrator_cidrs) > 0 && alltrue([for c in var.orchestrator_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "orchestrator_cidrs must hold at least one valid CIDR block and must not be 0.0.0.0/0."
  }
}

variable "admin_cidrs" {
  description = "Addresses (CIDR blocks) of the machines that run Terraform; they alone may reach the GKE control plane (master authorized networks)."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must hold at least one valid CIDR block and must not be 0.0.0.0/0."
  }
}

variable "image" {
  description = "Container image of the fedflow site (runs `fedflow site serve` and the Dask scheduler and workers), in Artifact Registry of this project (reached through Private Google Access), pinned by digest (REPO@sha256:...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be a registry image reference pinned by digest: REGISTRY/REPO@sha256:<64 hex>."
  }
}

variable "service_port" {
  description = "TCP port the site service listens on and is exposed on (mutual TLS terminates in the service itself)."
  type        = number
  default     = 8443

  validation {
    condition     = var.service_port >= 1024 && var.service_port <= 65535 && var.service_port != 8786
    error_message = "service_port must be an unprivileged port (1024-65535) other than the Dask scheduler port 8786."
  }
}

variable "dask_workers" {
  description = "Number of Dask worker pods in the site's cluster."
  type        = number
  default     = 2

  validation {
    condition     = var.dask_workers >= 1 && var.dask_workers <= 30 && floor(var.dask_workers) == var.dask_workers
    error_message = "dask_workers must be a whole number between 1 and 30."
  }
}

variable "trusted_issuers" {
  description = "Token issuers the site trusts: issuer URL and its PEM public key (public keys are not secret)."
  type = list(object({
    issuer         = string
    public_key_pem = string
  }))

  validation {
    condition     = length(var.trusted_issuers) > 0 && alltrue([for t in var.trusted_issuers : can(regex("^https://[^\\s/$.?#].[^\\s]*$", t.issuer)) && strcontains(t.public_key_pem, "BEGIN PUBLIC KEY")])
    error_message = "trusted_issuers needs at least one entry; each issuer is an https:// URL and each public_key_pem a PEM public key."
  }
}

variable "policy_yaml" {
  description = "The site's own policy (YAML text, as read by the fedflow policy engine)."
  type        = string

  validation {
    condition     = length(trimspace(var.policy_yaml)) > 0
    error_message = "policy_yaml must not be empty: a site without a policy would allow nothing."
  }
}

variable "audit_retention_days" {
  description = "Days each audit object is retained (bucket retention policy: no delete or overwrite before then)."
  type        = number
  default     = 3653

  validation {
    condition     = var.audit_retention_days >= 365 && var.audit_retention_days <= 36500
    error_message = "audit_retention_days must be between 365 and 36500."
  }
}

variable "log_retention_days" {
  description = "Days the access-log bucket keeps GCS access logs (Cloud Logging keeps container and flow logs under its own retention)."
  type        = number
  default     = 365

  validation {
    condition     = var.log_retention_days >= 365 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 365 and 730."
  }
}

variable "subnet_cidr" {
  description = "Primary IPv4 range of the site's subnet (GKE nodes)."
  type        = string
  default     = "10.42.0.0/20"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a valid IPv4 CIDR block."
  }
}

variable "pods_cidr" {
  description = "Secondary IPv4 range for GKE pods."
  type        = string
  default     = "10.43.0.0/17"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a valid IPv4 CIDR block."
  }
}

variable "services_cidr" {
  description = "Secondary IPv4 range for GKE services."
  type        = string
  default     = "10.43.128.0/22"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a valid IPv4 CIDR block."
  }
}

variable "master_cidr" {
  description = "/28 range for the GKE control plane's private endpoint."
  type        = string
  default     = "172.16.42.0/28"

  validation {
    condition     = can(cidrhost(var.master_cidr, 0)) && endswith(var.master_cidr, "/28")
    error_message = "master_cidr must be a valid /28 IPv4 CIDR block."
  }
}

variable "dask_threads_per_worker" {
  description = "Threads per Dask worker; each worker pod requests one vCPU per thread."
  type        = number
  default     = 2

  validation {
    condition     = contains([1, 2, 4, 8], var.dask_threads_per_worker)
    error_message = "dask_threads_per_worker must be 1, 2, 4 or 8."
  }
}

variable "tls_secret_name" {
  description = "Name of the Kubernetes secret (type kubernetes.io/tls plus key ca.crt, in the site namespace) with the site certificate, its key and the CA that signs the orchestrator's client certificates. Create it with cert-manager or kubectl; it never passes through Terraform state."
  type        = string
  default     = "fedflow-site-tls"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.tls_secret_name)) && length(var.tls_secret_name) <= 63
    error_message = "tls_secret_name must be a Kubernetes object name (DNS-1123 label)."
  }
}

variable "state_volume_size" {
  description = "Size of the site's persistent state volume (live audit log and quarantine), as a Kubernetes quantity such as 20Gi."
  type        = string
  default     = "20Gi"

  validation {
    condition     = can(regex("^[1-9][0-9]*Gi$", var.state_volume_size))
    error_message = "state_volume_size must be a whole number of Gi, such as 20Gi."
  }
}

variable "audit_retention_locked" {
  description = "Lock the audit bucket's retention policy. Locking is irreversible: set it once the deployment is verified."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels added to every resource that takes them."
  type        = map(string)
  default     = {}
}
