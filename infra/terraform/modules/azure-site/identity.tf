# Least-privilege role assignments. The site identity reads the data container and may only
# create and append blobs in the audit container (a custom role: no read, no delete, no
# overwrite of locked blobs). Dask workers read the data container. The scheduler has no data
# role at all. Each identity may pull the image; only the site identity reads the TLS secrets.

data "azurerm_key_vault" "tls" {
  name                = regex("/vaults/([^/]+)$", var.tls_key_vault_id)[0]
  resource_group_name = regex("/resourceGroups/([^/]+)/", var.tls_key_vault_id)[0]
}

locals {
  tls_secret_ids = { for k, name in var.tls_secret_names : k => "${data.azurerm_key_vault.tls.vault_uri}secrets/${name}" }
}

resource "azurerm_role_definition" "audit_appender" {
  name        = "fedflow audit appender (${var.site_name})"
  scope       = azurerm_storage_account.audit.id
  description = "Create and append blobs in the fedflow audit container; no read, delete or tag."
  permissions {
    data_actions = [
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
      "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
    ]
  }
  assignable_scopes = [azurerm_storage_account.audit.id]
}

resource "azurerm_role_assignment" "site_reads_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.site.principal_id
}

resource "azurerm_role_assignment" "site_appends_audit" {
  scope              = azurerm_storage_container.audit.id
  role_definition_id = azurerm_role_definition.audit_appender.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.site.principal_id
}

resource "azurerm_role_assignment" "worker_reads_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
}

resource "azurerm_role_assignment" "site_reads_tls" {
  for_each             = var.tls_secret_names
  scope                = "${var.tls_key_vault_id}/secrets/${each.value}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.site.principal_id
}
