# The configuration `fedflow site serve` reads, built from this module's resources. The site app
# mounts it (secret volume) at /etc/fedflow/site-yaml; the `site_config` output renders the same
# object as YAML. Blob locations name the storage account in the URL (the data and audit containers
# live in different accounts): az://<container>@<account>.blob.core.windows.net/<prefix>.

locals {
  site_config = {
    site         = var.site_name
    jurisdiction = var.jurisdiction
    audience     = var.audience
    datasets = {
      for name, prefix in var.datasets : name => {
        location = "az://${azurerm_storage_container.data.name}@${azurerm_storage_account.data.name}.blob.core.windows.net/${prefix}"
      }
    }
    policy    = local.files.policy
    state_dir = local.state_dir
    dask = {
      scheduler_address  = "tcp://${local.scheduler_host}:8786"
      workers            = var.dask_workers
      threads_per_worker = var.dask_threads_per_worker
    }
    trusted_issuers = [
      for i, t in var.trusted_issuers : {
        issuer     = t.issuer
        public_key = "${local.config_dir}/issuer-${i}-pem"
      }
    ]
    service = {
      host      = "0.0.0.0"
      port      = var.service_port
      tls_cert  = "${local.config_dir}/${local.files.site_crt}"
      tls_key   = "${local.config_dir}/${local.files.site_key}"
      client_ca = "${local.config_dir}/${local.files.ca_crt}"
    }
    audit = {
      location = "az://${azurerm_storage_container.audit.name}@${azurerm_storage_account.audit.name}.blob.core.windows.net/${var.site_name}"
    }
  }
}
