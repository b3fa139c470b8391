# One customer-managed key per site encrypts the data bucket, the audit bucket, the logs and the
# secrets the tasks read. The custodian's account administers it; CloudWatch Logs may use it for
# this site's log groups only.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

resource "aws_kms_key" "site" {
  description             = "fedflow site ${var.site_name}: data, audit and logs"
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
        Sid       = "CloudWatchLogsForThisSite"
        Effect    = "Allow"
        Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/fedflow/${var.site_name}/*"
          }
        }
      },
    ]
  })
  tags = local.tags
}

resource "aws_kms_alias" "site" {
  name          = "alias/fedflow-${var.site_name}"
  target_key_id = aws_kms_key.site.key_id
}
