output "site_config" {
  description = "The site configuration (YAML) that `fedflow site serve` runs with in this deployment."
  value       = yamlencode(local.site_config)
}

output "site_endpoint" {
  description = "Address the orchestrator dials (mutual TLS over TCP ingress): host:port of the site app."
  value       = "${azurerm_container_app.site.ingress[0].fqdn}:${var.service_port}"
}

output "data_storage_account" {
  description = "Name of the data storage account; load each dataset's parquet tables under its prefix in the data container (through the private endpoint)."
  value       = azurerm_storage_account.data.name
}

output "audit_storage_account" {
  description = "Name of the immutable audit storage account."
  value       = azurerm_storage_account.audit.name
}

output "key_vault_key_id" {
  description = "Versionless ID of the site's customer-managed key."
  value       = azurerm_key_vault_key.site.versionless_id
}

output "site_identity_client_id" {
  description = "Client ID of the site service's managed identity (reads data, appends audit)."
  value       = azurerm_user_assigned_identity.site.client_id
}

output "log_analytics_workspace_id" {
  description = "Log Analytics workspace holding the apps', storage and Key Vault logs."
  value       = azurerm_log_analytics_workspace.site.id
}
