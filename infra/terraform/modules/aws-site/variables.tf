variable "site_name" {
  description = "Name of the site in the federation (lower-case letters, digits and hyphens). Prefixes every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.site_name)) && length(var.site_name) >= 3 && length(var.site_name) <= 20
    error_message = "site_name must be 3-20 characters of [a-z0-9] in hyphen-separated words (load balancer names derived from it allow 32 characters)."
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
  description = "Legal jurisdiction the site's data falls under (ISO-style upper-case code such as EU, US, UK); written into the site configuration for jurisdiction rules in the site policy."
  type        = string

  validation {
    condition     = can(regex("^[A-Z]{2,8}$", var.jurisdiction))
    error_message = "jurisdiction must be 2-8 upper-case letters (e.g. EU, US, UK)."
  }
}

variable "datasets" {
  description = "Datasets the site serves: map of dataset name to the object prefix (folder) inside the data bucket that holds its parquet tables."
  type        = map(string)

  validation {
    condition     = length(var.datasets) > 0 && alltrue([for name in keys(var.datasets) : can(regex("^[a-z0-9_][a-z0-9_-]*$", name))])
    error_message = "datasets must name at least one dataset; dataset names are [a-z0-9_-]."
  }

  validation {
    condition     = alltrue([for prefix in values(var.datasets) : can(regex("^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$", prefix))])
    error_message = "dataset prefixes are relative object paths such as omop/v5.4 (no leading or trailing slash, no spaces)."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the site's private VPC."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones (names, e.g. eu-west-1a) to spread subnets, load balancer nodes and tasks over. Named explicitly so the network never grows when AWS adds a zone."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && alltrue([for z in var.availability_zones : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", z))])
    error_message = "availability_zones must name 2 or 3 zones such as eu-west-1a."
  }
}

variable "orchestrator_cidrs" {
  description = "Source addresses (CIDR blocks) of the federation orchestrator. Only these reach the site service; nothing else is allowed in."
  type        = list(string)

  validation {
    condition     = length(var.orchestrator_cidrs) > 0 && alltrue([for c in var.orchestrator_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "orchestrator_cidrs must hold at least one valid CIDR block and must not be 0.0.0.0/0."
  }
}

variable "image" {
  description = "Container image of the fedflow site (runs `fedflow site serve` and the Dask scheduler and workers), in an ECR repository of this region, pinned by digest (REPO@sha256:...)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be an ECR image reference pinned by digest: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:<64 hex>."
  }
}

variable "service_port" {
  description = "TCP port the site service listens on (mutual TLS terminates in the service itself, not at the load balancer)."
  type        = number
  default     = 8443

  validation {
    condition     = var.service_port >= 1024 && var.service_port <= 65535 && var.service_port != 8786
    error_message = "service_port must be an unprivileged port (1024-65535) other than the Dask scheduler port 8786."
  }
}

variable "dask_workers" {
  description = "Number of Dask worker tasks in the site's cluster."
  type        = number
  default     = 2

  validation {
    condition     = var.dask_workers >= 1 && var.dask_workers <= 64 && floor(var.dask_workers) == var.dask_workers
    error_message = "dask_workers must be a whole number between 1 and 64."
  }
}

variable "dask_threads_per_worker" {
  description = "Threads per Dask worker; each worker task gets one vCPU per thread."
  type        = number
  default     = 2

  validation {
    condition     = contains([1, 2, 4], var.dask_threads_per_worker)
    error_message = "dask_threads_per_worker must be 1, 2 or 4 (the Fargate vCPU sizes)."
  }
}

variable "tls_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the site's TLS material as JSON with keys site_crt, site_key (PEM) and orchestrator_ca_crt (the CA that signs the orchestrator's client certificates)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.tls_secret_arn))
    error_message = "tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "trusted_issuers" {
  description = "Token issuers the site trusts: issuer URL and its PEM public key. Public keys are not secret; they are written into the task's configuration volume."
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
  description = "The site's own policy (YAML text, as read by the fedflow policy engine). Written next to the site configuration as policy.yaml."
  type        = string

  validation {
    condition     = length(trimspace(var.policy_yaml)) > 0
    error_message = "policy_yaml must not be empty: a site without a policy would allow nothing."
  }
}

variable "audit_retention_days" {
  description = "Days each audit object is locked in COMPLIANCE mode (cannot be deleted or overwritten, even by the account root)."
  type        = number
  default     = 3653

  validation {
    condition     = var.audit_retention_days >= 365
    error_message = "audit_retention_days must be at least 365."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps service, Dask and VPC flow logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value of at least 365 days."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
