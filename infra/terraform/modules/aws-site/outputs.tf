output "site_config" {
  description = "The site configuration (YAML) that `fedflow site serve` runs with in this deployment."
  value       = yamlencode(local.site_config)
}

output "site_endpoint" {
  description = "Address the orchestrator dials (mutual TLS, TCP pass-through): host:port of the network load balancer."
  value       = "${aws_lb.site.dns_name}:${var.service_port}"
}

output "data_bucket" {
  description = "Name of the data bucket; load each dataset's parquet tables under its prefix."
  value       = aws_s3_bucket.data.bucket
}

output "audit_bucket" {
  description = "Name of the object-locked audit bucket."
  value       = aws_s3_bucket.audit.bucket
}

output "kms_key_arn" {
  description = "ARN of the site's customer-managed KMS key (data, audit, logs)."
  value       = aws_kms_key.site.arn
}

output "site_role_arn" {
  description = "IAM role of the site service: reads the data bucket, writes the audit bucket."
  value       = aws_iam_role.site.arn
}

output "log_group" {
  description = "CloudWatch log group of the site service and its Dask cluster."
  value       = aws_cloudwatch_log_group.tasks.name
}
