# PostgreSQL for the Prefect server: encrypted with the orchestrator's key, private, TLS enforced,
# master password generated and rotated by RDS in Secrets Manager (never in Terraform state).

resource "aws_db_subnet_group" "prefect" {
  name       = "${local.name_prefix}-prefect"
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "aws_db_parameter_group" "prefect" {
  name   = "${local.name_prefix}-prefect-pg${var.postgres_version}"
  family = "postgres${var.postgres_version}"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  tags = local.tags
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.name_prefix}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "prefect" {
  identifier                            = "${local.name_prefix}-prefect"
  engine                                = "postgres"
  engine_version                        = var.postgres_version
  instance_class                        = var.db_instance_class
  allocated_storage                     = 50
  max_allocated_storage                 = 500
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.orchestrator.arn
  db_name                               = "prefect"
  username                              = "prefect"
  manage_master_user_password           = true
  master_user_secret_kms_key_id         = aws_kms_key.orchestrator.arn
  iam_database_authentication_enabled   = true
  db_subnet_group_name                  = aws_db_subnet_group.prefect.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  parameter_group_name                  = aws_db_parameter_group.prefect.name
  publicly_accessible                   = false
  multi_az                              = true
  backup_retention_period               = 14
  copy_tags_to_snapshot                 = true
  deletion_protection                   = true
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${local.name_prefix}-prefect-final"
  auto_minor_version_upgrade            = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.orchestrator.arn
  performance_insights_retention_period = 7
  tags                                  = local.tags
}
