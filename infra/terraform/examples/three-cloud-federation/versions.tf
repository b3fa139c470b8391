terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0, < 5.0"
    }
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30, < 7.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.27, < 3.0"
    }
  }
}

provider "aws" {
  alias  = "orchestrator"
  region = var.orchestrator_region
}

provider "aws" {
  alias  = "site"
  region = var.aws_site_region
}

provider "azurerm" {
  features {}
  subscription_id = var.azure_subscription_id
}

provider "google" {
  project = var.gcp_project_id
  region  = var.gcp_region
}

# The GKE site's workloads are applied through the cluster the gcp-site module creates.
data "google_client_config" "current" {}

provider "kubernetes" {
  host                   = "https://${module.uk_registry.cluster_endpoint}"
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = base64decode(module.uk_registry.cluster_ca_certificate)
}
