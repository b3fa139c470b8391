# Least-privilege identities. The site service reads the data bucket and writes (never reads,
# deletes or overwrites: object lock) the audit bucket; Dask workers read the data bucket; the
# Dask scheduler has no task role at all. The ECS agent's execution role pulls the image, writes
# logs and reads the one TLS secret.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "read_data" {
  statement {
    sid       = "ListDatasets"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
  }
  statement {
    sid       = "ReadDatasets"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.data.arn}/*"]
  }
  statement {
    sid       = "DecryptDatasets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.site.arn]
  }
}

data "aws_iam_policy_document" "write_audit" {
  statement {
    sid       = "AppendAudit"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.audit.arn}/*"]
  }
  statement {
    sid       = "EncryptAudit"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.site.arn]
  }
}

# --- site service -------------------------------------------------------------------------------

resource "aws_iam_role" "site" {
  name               = "${local.name_prefix}-site"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "site_read_data" {
  name   = "read-data"
  role   = aws_iam_role.site.id
  policy = data.aws_iam_policy_document.read_data.json
}

resource "aws_iam_role_policy" "site_write_audit" {
  name   = "write-audit"
  role   = aws_iam_role.site.id
  policy = data.aws_iam_policy_document.write_audit.json
}

# --- Dask workers -------------------------------------------------------------------------------

resource "aws_iam_role" "worker" {
  name               = "${local.name_prefix}-dask-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "worker_read_data" {
  name   = "read-data"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.read_data.json
}

# --- ECS agent ----------------------------------------------------------------------------------

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "PullImageToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions.
  }
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
    resources = ["arn:${data.aws_partition.current.partition}:ecr:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:repository/*"]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.tasks.arn}:*"]
  }
  statement {
    sid       = "ReadTlsSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.tls_secret_arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${local.name_prefix}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-log-secret"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- VPC flow logs ------------------------------------------------------------------------------

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${local.name_prefix}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
