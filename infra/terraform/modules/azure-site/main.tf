# Resource group, customer-managed key and the identities everything else uses.

data "azurerm_client_config" "current" {}

locals {
  name_prefix = "fedflow-${var.site_name}"
  # Globally unique, stable suffix for storage account and Key Vault names.
  suffix  = substr(sha256("${data.azurerm_client_config.current.subscription_id}/${var.site_name}"), 0, 6)
  compact = substr(replace(var.site_name, "-", ""), 0, 12)
  tags    = merge(var.tags, { "fedflow-site" = var.site_name, "fedflow-component" = "site" })
}

resource "azurerm_resource_group" "site" {
  name     = "rg-${local.name_prefix}"
  location = var.location
  tags     = local.tags
}

resource "azurerm_user_assigned_identity" "site" {
  name                = "id-${local.name_prefix}-site"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "worker" {
  name                = "id-${local.name_prefix}-dask-worker"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "scheduler" {
  name                = "id-${local.name_prefix}-dask-scheduler"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags
}

# The storage accounts' own identity, used only to unwrap the customer-managed key.
resource "azurerm_user_assigned_identity" "storage" {
  name                = "id-${local.name_prefix}-storage-cmk"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  tags                = local.tags
}

# --- customer-managed key -------------------------------------------------------------------------

resource "azurerm_key_vault" "site" {
  # checkov:skip=CKV_AZURE_189:Terraform creates the customer-managed key through the Key Vault data plane; the network ACL denies by default and admits admin_cidrs and the private endpoint only.
  name                          = "kv-ff-${substr(local.compact, 0, 11)}-${local.suffix}"
  resource_group_name           = azurerm_resource_group.site.name
  location                      = var.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium"
  enable_rbac_authorization     = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = true
  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    ip_rules       = var.admin_cidrs
  }
  tags = local.tags
}

resource "azurerm_role_assignment" "admin_crypto_officer" {
  scope                = azurerm_key_vault.site.id
  role_definition_name = "Key Vault Crypto Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_key" "site" {
  name            = "fedflow-site-cmk"
  key_vault_id    = azurerm_key_vault.site.id
  key_type        = "RSA-HSM"
  key_size        = 3072
  key_opts        = ["wrapKey", "unwrapKey"]
  expiration_date = var.cmk_expiration_date
  rotation_policy {
    automatic {
      time_before_expiry = "P30D"
    }
    expire_after         = "P1Y"
    notify_before_expiry = "P29D"
  }
  tags       = local.tags
  depends_on = [azurerm_role_assignment.admin_crypto_officer]
}

resource "azurerm_role_assignment" "storage_cmk" {
  scope                = azurerm_key_vault.site.id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.storage.principal_id
}

# --- logs ---------------------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "site" {
  name                = "log-${local.name_prefix}"
  resource_group_name = azurerm_resource_group.site.name
  location            = var.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  name                       = "fedflow-audit"
  target_resource_id         = azurerm_key_vault.site.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.site.id
  enabled_log {
    category = "AuditEvent"
  }
}
