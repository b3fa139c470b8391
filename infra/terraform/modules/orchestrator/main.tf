# The federation's orchestrator on AWS: Prefect server (PostgreSQL on RDS) and a Prefect worker
# that runs the federated flows, dials the sites with the orchestrator's mutual-TLS client
# certificate and keeps the sites' signed audit checkpoints in an object-locked bucket. Its
# traffic to the sites leaves through NAT gateways with fixed addresses (output egress_cidrs),
# which the site modules take as orchestrator_cidrs.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_elb_service_account" "current" {}

locals {
  name_prefix = "fedflow-${var.name}"
  tags        = merge(var.tags, { "fedflow:federation" = var.name, "fedflow:component" = "orchestrator" })
  config_dir  = "/etc/fedflow"
  namespace   = "${var.name}.orchestrator.fedflow.internal"
  prefect_api = "http://prefect-server.${local.namespace}:4200/api"
}

resource "aws_kms_key" "orchestrator" {
  description             = "fedflow orchestrator ${var.name}: database, checkpoints, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsForThisOrchestrator"
        Effect    = "Allow"
        Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/fedflow/${var.name}/*"
          }
        }
      },
    ]
  })
  tags = local.tags
}

resource "aws_kms_alias" "orchestrator" {
  name          = "alias/fedflow-${var.name}-orchestrator"
  target_key_id = aws_kms_key.orchestrator.key_id
}

resource "aws_cloudwatch_log_group" "tasks" {
  name              = "/fedflow/${var.name}/orchestrator"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.orchestrator.arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/fedflow/${var.name}/vpc-flow"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.orchestrator.arn
  tags              = local.tags
}
