# Persistent state for the site service: the live hash-chained audit log and the quarantine
# (`state_dir`) live on EFS, encrypted with the site's key, mounted over TLS through an access
# point that pins the directory and the POSIX user, and reachable by the site task role only.
# The site service runs one task at a time (see compute.tf) so one writer owns the chain.

resource "aws_efs_file_system" "state" {
  encrypted        = true
  kms_key_id       = aws_kms_key.site.arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"
  tags             = merge(local.tags, { Name = "${local.name_prefix}-state" })
}

resource "aws_efs_backup_policy" "state" {
  file_system_id = aws_efs_file_system.state.id
  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_efs_access_point" "state" {
  file_system_id = aws_efs_file_system.state.id
  posix_user {
    uid = 10001
    gid = 10001
  }
  root_directory {
    path = "/fedflow-state"
    creation_info {
      owner_uid   = 10001
      owner_gid   = 10001
      permissions = "0700"
    }
  }
  tags = local.tags
}

resource "aws_efs_file_system_policy" "state" {
  file_system_id = aws_efs_file_system.state.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "SiteMountsThroughItsAccessPoint"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.site.arn }
        Action    = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
        Resource  = aws_efs_file_system.state.arn
        Condition = {
          StringEquals = { "elasticfilesystem:AccessPointArn" = aws_efs_access_point.state.arn }
          Bool         = { "elasticfilesystem:AccessedViaMountTarget" = "true" }
        }
      },
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "*"
        Resource  = aws_efs_file_system.state.arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}

resource "aws_efs_mount_target" "state" {
  count           = length(local.azs)
  file_system_id  = aws_efs_file_system.state.id
  subnet_id       = aws_subnet.private[count.index].id
  security_groups = [aws_security_group.state.id]
}

resource "aws_security_group" "state" {
  name        = "${local.name_prefix}-state"
  description = "fedflow site state volume (EFS): NFS from the site service only"
  vpc_id      = aws_vpc.site.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "state_from_site" {
  security_group_id            = aws_security_group.state.id
  description                  = "NFS over TLS from the site's tasks"
  referenced_security_group_id = aws_security_group.site.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}

resource "aws_vpc_security_group_egress_rule" "site_state" {
  security_group_id            = aws_security_group.site.id
  description                  = "NFS over TLS to the state volume"
  referenced_security_group_id = aws_security_group.state.id
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
}
