# Two storage accounts: the custodian's data (CMK, versioned, soft delete) and the site's audit log
# (CMK, account-level immutability with protected appends). Neither is reachable from the public
# internet; the site's apps reach both through private endpoints.

locals {
  accounts = {
    data  = azurerm_storage_account.data
    audit = azurerm_storage_account.audit
  }
}

resource "azurerm_storage_account" "data" {
  # checkov:skip=CKV_AZURE_206:Geo-replication would copy patient-level data to a paired region the custodian did not choose; zone-redundant storage keeps it in-region.
  # checkov:skip=CKV_AZURE_33:The account holds blobs only; no queue service is used, so there is no queue log to enable.
  name                              = "ff${local.compact}d${local.suffix}"
  resource_group_name               = azurerm_resource_group.site.name
  location                          = var.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  default_to_oauth_authentication   = true
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.storage.id]
  }
  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.site.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.storage.id
  }
  blob_properties {
    versioning_enabled  = true
    change_feed_enabled = true
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }
  sas_policy {
    expiration_period = "00.01:00:00"
  }
  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }
  tags       = local.tags
  depends_on = [azurerm_role_assignment.storage_cmk]
}

resource "azurerm_storage_account" "audit" {
  # checkov:skip=CKV_AZURE_206:The audit log stays in the region of the data it describes; the orchestrator keeps signed checkpoints of it, which is the off-site copy.
  # checkov:skip=CKV_AZURE_33:The account holds blobs only; no queue service is used, so there is no queue log to enable.
  name                              = "ff${local.compact}a${local.suffix}"
  resource_group_name               = azurerm_resource_group.site.name
  location                          = var.location
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  allow_nested_items_to_be_public   = false
  public_network_access_enabled     = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  default_to_oauth_authentication   = true
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.storage.id]
  }
  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.site.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.storage.id
  }
  immutability_policy {
    allow_protected_append_writes = true
    state                         = var.audit_immutability_state
    period_since_creation_in_days = var.audit_retention_days
  }
  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }
  sas_policy {
    expiration_period = "00.01:00:00"
  }
  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }
  tags       = local.tags
  depends_on = [azurerm_role_assignment.storage_cmk]
}

# Created through the management plane (storage_account_id), so Terraform needs no data-plane
# access to the accounts.
resource "azurerm_storage_container" "data" {
  # checkov:skip=CKV2_AZURE_21:Blob reads are logged by the diagnostic setting on blobServices (StorageRead, below); the legacy Storage Insights resource this check looks for needs the account shared key, which is disabled.
  name                  = "data"
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "audit" {
  # checkov:skip=CKV2_AZURE_21:Blob reads are logged by the diagnostic setting on blobServices (StorageRead, below); the legacy Storage Insights resource this check looks for needs the account shared key, which is disabled.
  name                  = "audit"
  storage_account_id    = azurerm_storage_account.audit.id
  container_access_type = "private"
}

# Blob read, write and delete logs of both accounts go to the site's workspace.
resource "azurerm_monitor_diagnostic_setting" "blobs" {
  for_each                   = local.accounts
  name                       = "fedflow-blob-logs"
  target_resource_id         = "${each.value.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.site.id
  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
