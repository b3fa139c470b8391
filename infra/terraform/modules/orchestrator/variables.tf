variable "name" {
  description = "Name of the federation's orchestrator deployment (lower-case letters, digits and hyphens). Prefixes every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.name)) && length(var.name) >= 3 && length(var.name) <= 20
    error_message = "name must be 3-20 characters of [a-z0-9] in hyphen-separated words (load balancer names derived from it allow 32 characters)."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR block of the orchestrator's VPC."
  type        = string
  default     = "10.50.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones (names, e.g. eu-west-1a) for subnets, the database and tasks. Named explicitly so the network never grows when AWS adds a zone."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && alltrue([for z in var.availability_zones : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", z))])
    error_message = "availability_zones must name 2 or 3 zones such as eu-west-1a."
  }
}

variable "operator_cidrs" {
  description = "Addresses (CIDR blocks) of platform operators allowed to reach the Prefect UI and API on the internal load balancer (over VPN, peering or Direct Connect)."
  type        = list(string)

  validation {
    condition     = length(var.operator_cidrs) > 0 && alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "operator_cidrs must hold at least one valid CIDR block and must not be 0.0.0.0/0."
  }
}

variable "site_endpoints" {
  description = "Sites the orchestrator dials: map of site name to host:port (the site modules' site_endpoint outputs)."
  type        = map(string)

  validation {
    condition     = alltrue([for name, ep in var.site_endpoints : can(regex("^[a-z0-9][a-z0-9-]*[a-z0-9]$", name)) && can(regex("^[A-Za-z0-9.-]+:[0-9]{2,5}$", ep))])
    error_message = "site_endpoints maps site names ([a-z0-9-]) to host:port."
  }
}

variable "site_ports" {
  description = "TCP ports the sites' services listen on; the flow worker may connect out to these only. Separate from site_endpoints so the rules are known before the sites exist."
  type        = list(number)
  default     = [8443]

  validation {
    condition     = length(var.site_ports) > 0 && alltrue([for p in var.site_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "site_ports must list TCP ports between 1 and 65535."
  }
}

variable "image" {
  description = "Container image with Prefect and the fedflow flows, in an ECR repository of this region, pinned by digest (REPO@sha256:...)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be an ECR image reference pinned by digest: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:<64 hex>."
  }
}

variable "certificate_arn" {
  description = "ACM certificate for the Prefect API/UI load balancer's HTTPS listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "identity_secret_arn" {
  description = "ARN of the Secrets Manager secret with the orchestrator's identity as JSON: client_crt and client_key (PEM, the mutual-TLS client certificate sites verify against their client_ca), sites_ca_crt (CA bundle that signs the sites' server certificates) and checkpoint_signing_key (PEM, signs audit checkpoints)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.identity_secret_arn))
    error_message = "identity_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "client_ca_certificate_pem" {
  description = "PEM certificate of the CA that signs the orchestrator's client certificates. Public: every site installs it as its client_ca."
  type        = string

  validation {
    condition     = strcontains(var.client_ca_certificate_pem, "BEGIN CERTIFICATE")
    error_message = "client_ca_certificate_pem must be a PEM certificate."
  }
}

variable "db_instance_class" {
  description = "RDS instance class of the Prefect PostgreSQL database."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "db_instance_class must be an RDS instance class such as db.t4g.medium."
  }
}

variable "postgres_version" {
  description = "PostgreSQL major version of the Prefect database."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["15", "16", "17"], var.postgres_version)
    error_message = "postgres_version must be 15, 16 or 17."
  }
}

variable "checkpoint_retention_days" {
  description = "Days each signed audit checkpoint is locked in COMPLIANCE mode."
  type        = number
  default     = 3653

  validation {
    condition     = var.checkpoint_retention_days >= 365
    error_message = "checkpoint_retention_days must be at least 365."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps Prefect, worker, database and VPC flow logs."
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
