output "site_config" {
  description = "The site configuration (YAML) that `fedflow site serve` runs with in this deployment."
  value       = yamlencode(local.site_config)
}

output "site_endpoint" {
  description = "Address the orchestrator dials (mutual TLS, passthrough load balancer): ip:port, known once GKE has provisioned the load balancer."
  value       = "${try(kubernetes_service_v1.site.status[0].load_balancer[0].ingress[0].ip, "pending")}:${var.service_port}"
}

output "cluster_endpoint" {
  description = "GKE control-plane endpoint, for the caller's kubernetes provider."
  value       = google_container_cluster.site.endpoint
}

output "cluster_ca_certificate" {
  description = "GKE cluster CA certificate (base64), for the caller's kubernetes provider."
  value       = google_container_cluster.site.master_auth[0].cluster_ca_certificate
}

output "data_bucket" {
  description = "Name of the data bucket; load each dataset's parquet tables under its prefix."
  value       = google_storage_bucket.data.name
}

output "audit_bucket" {
  description = "Name of the audit bucket (retention policy)."
  value       = google_storage_bucket.audit.name
}

output "kms_key_id" {
  description = "ID of the site's customer-managed key (buckets, Kubernetes secrets)."
  value       = google_kms_crypto_key.site.id
}

output "site_service_account" {
  description = "Google service account of the site service: reads the data bucket, creates audit objects."
  value       = google_service_account.site.email
}

output "namespace" {
  description = "Kubernetes namespace of the site; create the TLS secret (tls_secret_name) here."
  value       = kubernetes_namespace_v1.site.metadata[0].name
}
