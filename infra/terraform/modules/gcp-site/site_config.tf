# The configuration `fedflow site serve` reads, built from this module's resources. It reaches the
# site pod through the fedflow-site ConfigMap as /etc/fedflow/site.yaml; the `site_config` output
# renders the same object as YAML.

locals {
  site_config = {
    site         = var.site_name
    jurisdiction = var.jurisdiction
    audience     = var.audience
    datasets = {
      for name, prefix in var.datasets : name => {
        location = "gs://${google_storage_bucket.data.name}/${prefix}"
      }
    }
    policy    = "policy.yaml"
    state_dir = local.state_dir
    dask = {
      scheduler_address  = "tcp://${local.scheduler_host}:8786"
      workers            = var.dask_workers
      threads_per_worker = var.dask_threads_per_worker
    }
    trusted_issuers = [
      for i, t in var.trusted_issuers : {
        issuer     = t.issuer
        public_key = "${local.config_dir}/issuer-${i}.pub.pem"
      }
    ]
    service = {
      host      = "0.0.0.0"
      port      = var.service_port
      tls_cert  = "${local.tls_dir}/site.crt"
      tls_key   = "${local.tls_dir}/site.key"
      client_ca = "${local.tls_dir}/orchestrator-ca.crt"
    }
    audit = {
      location = "gs://${google_storage_bucket.audit.name}/${var.site_name}"
    }
  }
}
