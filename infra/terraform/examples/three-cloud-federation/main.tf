# A federation across three clouds: the orchestrator on AWS (eu-west-1), a US biobank on AWS, an
# EU hospital on Azure and a UK registry on Google Cloud. The orchestrator's fixed egress
# addresses are the only ones each site admits; each site's endpoint goes back to the orchestrator.

locals {
  federation = "three-cloud"
  issuer = {
    issuer         = var.trusted_issuer.issuer
    public_key_pem = file(var.trusted_issuer.public_key_file)
  }
  datasets = { omop = "omop/v5.4" }
}

module "orchestrator" {
  source    = "../../modules/orchestrator"
  providers = { aws = aws.orchestrator }

  name                      = local.federation
  availability_zones        = var.orchestrator_azs
  operator_cidrs            = var.operator_cidrs
  image                     = var.orchestrator_image
  certificate_arn           = var.orchestrator_certificate_arn
  identity_secret_arn       = var.orchestrator_identity_secret_arn
  client_ca_certificate_pem = file(var.orchestrator_client_ca_pem_file)
  site_endpoints = {
    us-biobank  = module.us_biobank.site_endpoint
    eu-hospital = module.eu_hospital.site_endpoint
    uk-registry = module.uk_registry.site_endpoint
  }
}

module "us_biobank" {
  source    = "../../modules/aws-site"
  providers = { aws = aws.site }

  site_name          = "us-biobank"
  jurisdiction       = "US"
  audience           = local.federation
  datasets           = local.datasets
  availability_zones = var.aws_site_azs
  orchestrator_cidrs = module.orchestrator.egress_cidrs
  image              = var.aws_site_image
  tls_secret_arn     = var.aws_site_tls_secret_arn
  trusted_issuers    = [local.issuer]
  policy_yaml        = file(var.site_policy_files["us-biobank"])
}

module "eu_hospital" {
  source = "../../modules/azure-site"

  site_name           = "eu-hospital"
  location            = var.azure_location
  jurisdiction        = "EU"
  audience            = local.federation
  datasets            = local.datasets
  orchestrator_cidrs  = module.orchestrator.egress_cidrs
  admin_cidrs         = var.admin_cidrs
  image               = var.azure_site_image
  registry_server     = var.azure_registry_server
  tls_key_vault_id    = var.azure_tls_key_vault_id
  cmk_expiration_date = var.azure_cmk_expiration_date
  trusted_issuers     = [local.issuer]
  policy_yaml         = file(var.site_policy_files["eu-hospital"])
}

module "uk_registry" {
  source = "../../modules/gcp-site"

  site_name          = "uk-registry"
  project_id         = var.gcp_project_id
  region             = var.gcp_region
  jurisdiction       = "UK"
  audience           = local.federation
  datasets           = local.datasets
  orchestrator_cidrs = module.orchestrator.egress_cidrs
  admin_cidrs        = var.admin_cidrs
  image              = var.gcp_site_image
  trusted_issuers    = [local.issuer]
  policy_yaml        = file(var.site_policy_files["uk-registry"])
}
