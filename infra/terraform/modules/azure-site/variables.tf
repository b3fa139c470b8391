variable "site_name" {
  description = "Name of the site in the federation (lower-case letters, digits and hyphens). Prefixes every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)*$", var.site_name)) && length(var.site_name) >= 3 && length(var.site_name) <= 20
    error_message = "site_name must be 3-20 characters of [a-z0-9] in hyphen-separated words (Azure storage and Key Vault names are short)."
  }
}

variable "location" {
  description = "Azure region the site is deployed to (e.g. westeurope). The data never leaves it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "location must be an Azure region name such as westeurope."
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

variable "vnet_cidr" {
  description = "IPv4 address space of the site's virtual network."
  type        = string
  default     = "10.41.0.0/16"

  validation {
    condition     = can(cidrhost(var.vnet_cidr, 0)) && tonumber(split("/", var.vnet_cidr)[1]) <= 22
    error_message = "vnet_cidr must be a valid IPv4 CIDR block of /22 or larger."
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
  description = "Addresses (CIDR blocks) of the machines that run Terraform; they alone may reach the Key Vault data plane to create the customer-managed key."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must hold at least one valid CIDR block and must not be 0.0.0.0/0."
  }
}

variable "image" {
  description = "Container image of the fedflow site (runs `fedflow site serve` and the Dask scheduler and workers), pinned by digest (REPO@sha256:...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be a registry image reference pinned by digest: REGISTRY/REPO@sha256:<64 hex>."
  }
}

variable "registry_server" {
  description = "Login server of the registry holding the image (e.g. myregistry.azurecr.io); the site's managed identities pull from it (grant them AcrPull on the registry)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?$", var.registry_server))
    error_message = "registry_server must be a registry host name such as myregistry.azurecr.io."
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
  description = "Number of Dask worker replicas in the site's cluster."
  type        = number
  default     = 2

  validation {
    condition     = var.dask_workers >= 1 && var.dask_workers <= 30 && floor(var.dask_workers) == var.dask_workers
    error_message = "dask_workers must be a whole number between 1 and 30."
  }
}

variable "dask_threads_per_worker" {
  description = "Threads per Dask worker; each worker replica gets half a vCPU per thread (Consumption profile limit: 4 vCPU)."
  type        = number
  default     = 2

  validation {
    condition     = contains([1, 2, 4, 8], var.dask_threads_per_worker)
    error_message = "dask_threads_per_worker must be 1, 2, 4 or 8."
  }
}

variable "tls_key_vault_id" {
  description = "Resource ID of the custodian's Key Vault that holds the site's TLS material (secrets named by tls_secret_names)."
  type        = string

  validation {
    condition     = can(regex("^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft.KeyVault/vaults/[A-Za-z0-9-]{3,24}$", var.tls_key_vault_id))
    error_message = "tls_key_vault_id must be a Key Vault resource ID."
  }
}

variable "tls_secret_names" {
  description = "Names of the Key Vault secrets with the site certificate, its private key and the CA that signs the orchestrator's client certificates (all PEM)."
  type = object({
    site_crt            = string
    site_key            = string
    orchestrator_ca_crt = string
  })
  default = {
    site_crt            = "fedflow-site-crt"
    site_key            = "fedflow-site-key"
    orchestrator_ca_crt = "fedflow-orchestrator-ca-crt"
  }

  validation {
    condition     = alltrue([for n in values(var.tls_secret_names) : can(regex("^[A-Za-z0-9-]{1,127}$", n))])
    error_message = "Key Vault secret names are 1-127 characters of [A-Za-z0-9-]."
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

variable "cmk_expiration_date" {
  description = "Expiry (RFC 3339, UTC) of the first version of the customer-managed key; the rotation policy creates new versions 30 days before each expiry."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", var.cmk_expiration_date))
    error_message = "cmk_expiration_date must be an RFC 3339 UTC timestamp such as 2027-12-31T00:00:00Z."
  }
}

variable "audit_retention_days" {
  description = "Days each audit blob is immutable (time-based retention; appends stay allowed, overwrites and deletes do not)."
  type        = number
  default     = 3653

  validation {
    condition     = var.audit_retention_days >= 365 && var.audit_retention_days <= 146000
    error_message = "audit_retention_days must be between 365 and 146000."
  }
}

variable "audit_immutability_state" {
  description = "State of the audit account's immutability policy. Start Unlocked, then set Locked once the deployment is verified: a Locked policy can never be shortened or removed."
  type        = string
  default     = "Unlocked"

  validation {
    condition     = contains(["Unlocked", "Locked"], var.audit_immutability_state)
    error_message = "audit_immutability_state must be Unlocked or Locked."
  }
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace keeps service, Dask, storage and network logs."
  type        = number
  default     = 365

  validation {
    condition     = var.log_retention_days >= 365 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 365 and 730."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
