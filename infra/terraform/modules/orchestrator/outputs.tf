output "egress_cidrs" {
  description = "Fixed public addresses (/32) the orchestrator dials the sites from: pass them to every site module as orchestrator_cidrs."
  value       = [for eip in aws_eip.nat : "${eip.public_ip}/32"]
}

output "client_ca_certificate_pem" {
  description = "CA certificate that signs the orchestrator's client certificates; every site installs it as its client_ca (orchestrator-ca.crt)."
  value       = var.client_ca_certificate_pem
}

output "identity_secret_arn" {
  description = "Secrets Manager secret holding the orchestrator's client certificate and key, the sites' CA bundle and the checkpoint signing key."
  value       = var.identity_secret_arn
}

output "prefect_ui_url" {
  description = "Prefect UI and API (internal load balancer, HTTPS); point a DNS name covered by certificate_arn at it."
  value       = "https://${aws_lb.prefect.dns_name}"
}

output "prefect_api_url" {
  description = "Prefect API URL for clients inside the orchestrator's network."
  value       = "https://${aws_lb.prefect.dns_name}/api"
}

output "work_pool" {
  description = "Prefect work pool the flow worker serves; deploy fedflow flows to it."
  value       = "fedflow-${var.name}"
}

output "checkpoint_bucket" {
  description = "Object-locked bucket holding the sites' signed audit checkpoints."
  value       = aws_s3_bucket.checkpoints.bucket
}

output "database_endpoint" {
  description = "Address of the Prefect PostgreSQL database (private)."
  value       = aws_db_instance.prefect.address
}

output "log_group" {
  description = "CloudWatch log group of the Prefect server and flow worker."
  value       = aws_cloudwatch_log_group.tasks.name
}
