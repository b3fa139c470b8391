variable "orchestrator_region" {
  description = "AWS region of the orchestrator."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.orchestrator_region))
    error_message = "orchestrator_region must be an AWS region such as eu-west-1."
  }
}

variable "orchestrator_azs" {
  description = "Availability zones of the orchestrator's VPC."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]

  validation {
    condition     = length(var.orchestrator_azs) >= 2 && alltrue([for z in var.orchestrator_azs : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", z))])
    error_message = "orchestrator_azs must name at least 2 zones such as eu-west-1a."
  }
}

variable "operator_cidrs" {
  description = "Addresses of platform operators who may reach the Prefect UI and API."
  type        = list(string)

  validation {
    condition     = length(var.operator_cidrs) > 0 && alltrue([for c in var.operator_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "operator_cidrs must hold valid CIDR blocks other than 0.0.0.0/0."
  }
}

variable "admin_cidrs" {
  description = "Addresses of the machines that run Terraform (Key Vault data plane on Azure, GKE control plane on GCP)."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "admin_cidrs must hold valid CIDR blocks other than 0.0.0.0/0."
  }
}

variable "orchestrator_image" {
  description = "ECR image (pinned by digest) with Prefect and the fedflow flows, in the orchestrator's region."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.orchestrator_image))
    error_message = "orchestrator_image must be pinned by digest."
  }
}

variable "orchestrator_certificate_arn" {
  description = "ACM certificate of the Prefect UI/API load balancer."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.orchestrator_certificate_arn))
    error_message = "orchestrator_certificate_arn must be an ACM certificate ARN."
  }
}

variable "orchestrator_identity_secret_arn" {
  description = "Secrets Manager secret with the orchestrator's client certificate and key, the sites' CA bundle and the checkpoint signing key (see the orchestrator module's README)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.orchestrator_identity_secret_arn))
    error_message = "orchestrator_identity_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "orchestrator_client_ca_pem_file" {
  description = "Path to the PEM certificate of the CA that signs the orchestrator's client certificates."
  type        = string

  validation {
    condition     = endswith(var.orchestrator_client_ca_pem_file, ".pem") || endswith(var.orchestrator_client_ca_pem_file, ".crt")
    error_message = "orchestrator_client_ca_pem_file must be a .pem or .crt file."
  }
}

variable "trusted_issuer" {
  description = "The federation's token issuer, trusted by every site: its URL and the path to its PEM public key."
  type = object({
    issuer          = string
    public_key_file = string
  })

  validation {
    condition     = startswith(var.trusted_issuer.issuer, "https://")
    error_message = "trusted_issuer.issuer must be an https:// URL."
  }
}

variable "site_policy_files" {
  description = "Path to each site's policy file (YAML), keyed by site name: us-biobank, eu-hospital, uk-registry."
  type        = map(string)

  validation {
    condition     = alltrue([for s in ["us-biobank", "eu-hospital", "uk-registry"] : contains(keys(var.site_policy_files), s)])
    error_message = "site_policy_files must name a policy file for us-biobank, eu-hospital and uk-registry."
  }
}

# --- AWS site: us-biobank ---

variable "aws_site_region" {
  description = "AWS region of the us-biobank site."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_site_region))
    error_message = "aws_site_region must be an AWS region such as us-east-1."
  }
}

variable "aws_site_azs" {
  description = "Availability zones of the us-biobank site."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]

  validation {
    condition     = length(var.aws_site_azs) >= 2 && alltrue([for z in var.aws_site_azs : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", z))])
    error_message = "aws_site_azs must name at least 2 zones such as us-east-1a."
  }
}

variable "aws_site_image" {
  description = "ECR image (pinned by digest) of the fedflow site in the us-biobank site's region."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.aws_site_image))
    error_message = "aws_site_image must be pinned by digest."
  }
}

variable "aws_site_tls_secret_arn" {
  description = "Secrets Manager secret with the us-biobank site's TLS material (site_crt, site_key, orchestrator_ca_crt)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.aws_site_tls_secret_arn))
    error_message = "aws_site_tls_secret_arn must be a Secrets Manager secret ARN."
  }
}

# --- Azure site: eu-hospital ---

variable "azure_subscription_id" {
  description = "Azure subscription of the eu-hospital site."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f-]{36}$", var.azure_subscription_id))
    error_message = "azure_subscription_id must be a subscription GUID."
  }
}

variable "azure_location" {
  description = "Azure region of the eu-hospital site."
  type        = string
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.azure_location))
    error_message = "azure_location must be an Azure region name such as westeurope."
  }
}

variable "azure_site_image" {
  description = "Image (pinned by digest) of the fedflow site for the eu-hospital site."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.azure_site_image))
    error_message = "azure_site_image must be pinned by digest."
  }
}

variable "azure_registry_server" {
  description = "Login server of the registry holding azure_site_image."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+$", var.azure_registry_server))
    error_message = "azure_registry_server must be a registry host name."
  }
}

variable "azure_tls_key_vault_id" {
  description = "Key Vault holding the eu-hospital site's TLS secrets."
  type        = string

  validation {
    condition     = can(regex("/providers/Microsoft.KeyVault/vaults/", var.azure_tls_key_vault_id))
    error_message = "azure_tls_key_vault_id must be a Key Vault resource ID."
  }
}

variable "azure_cmk_expiration_date" {
  description = "Expiry of the first version of the eu-hospital site's customer-managed key (RFC 3339 UTC)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", var.azure_cmk_expiration_date))
    error_message = "azure_cmk_expiration_date must be an RFC 3339 UTC timestamp."
  }
}

# --- GCP site: uk-registry ---

variable "gcp_project_id" {
  description = "Google Cloud project of the uk-registry site."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.gcp_project_id))
    error_message = "gcp_project_id must be a Google Cloud project ID."
  }
}

variable "gcp_region" {
  description = "Google Cloud region of the uk-registry site."
  type        = string
  default     = "europe-west2"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.gcp_region))
    error_message = "gcp_region must be a Google Cloud region such as europe-west2."
  }
}

variable "gcp_site_image" {
  description = "Artifact Registry image (pinned by digest) of the fedflow site for the uk-registry site."
  type        = string

  validation {
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.gcp_site_image))
    error_message = "gcp_site_image must be pinned by digest."
  }
}
