# The configuration `fedflow site serve` reads, built from this module's resources. The config
# container writes it to /etc/fedflow/site.yaml in the task; the `site_config` output renders the
# same object as YAML so operators can see (and test) exactly what the site runs with.

locals {
  site_config = {
    site         = var.site_name
    jurisdiction = var.jurisdiction
    audience     = var.audience
    datasets = {
      for name, prefix in var.datasets : name => {
        location = "s3://${aws_s3_bucket.data.bucket}/${prefix}"
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
        public_key = "${local.config_dir}/issuers/${i}.pub.pem"
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
      location = "s3://${aws_s3_bucket.audit.bucket}/${var.site_name}"
    }
  }
}
