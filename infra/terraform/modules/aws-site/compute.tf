# The site runs on ECS Fargate: three services (site, Dask scheduler, Dask workers) in one cluster,
# private subnets only. The scheduler registers in a private Cloud Map namespace so workers and the
# site service find it by DNS. A network load balancer passes TCP through to the site service.

locals {
  namespace      = "${var.site_name}.fedflow.internal"
  scheduler_host = "dask-scheduler.${local.namespace}"
  config_dir     = "/etc/fedflow"
  tls_dir        = "/etc/fedflow/tls"
  state_dir      = "/var/lib/fedflow"

  # Non-secret files the config container writes into the task's config volume.
  config_files = merge(
    {
      "site.yaml"   = yamlencode(local.site_config)
      "policy.yaml" = var.policy_yaml
    },
    { for i, t in var.trusted_issuers : "issuers/${i}.pub.pem" => t.public_key_pem },
  )

  # Writes FEDFLOW_CONFIG_FILES and the three TLS secrets as files, mode 0600, then exits.
  write_config = join("\n", [
    "import json, os, pathlib",
    "root = pathlib.Path('${local.config_dir}')",
    "files = json.loads(os.environ['FEDFLOW_CONFIG_FILES'])",
    "files.update({'tls/site.crt': os.environ['TLS_SITE_CRT'], 'tls/site.key': os.environ['TLS_SITE_KEY'], 'tls/orchestrator-ca.crt': os.environ['TLS_ORCHESTRATOR_CA']})",
    "for name, text in files.items():",
    "    path = root / name",
    "    path.parent.mkdir(parents=True, exist_ok=True)",
    "    path.write_text(text)",
    "    path.chmod(0o600)",
  ])

  log_options = {
    "awslogs-group"         = aws_cloudwatch_log_group.tasks.name
    "awslogs-region"        = data.aws_region.current.name
    "awslogs-stream-prefix" = "fedflow"
  }
  hardening = {
    user                   = "10001"
    readonlyRootFilesystem = true
    privileged             = false
    linuxParameters        = { initProcessEnabled = true, capabilities = { drop = ["ALL"] } }
  }
}

resource "aws_cloudwatch_log_group" "tasks" {
  name              = "/fedflow/${var.site_name}/tasks"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.site.arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "site" {
  name = local.name_prefix
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = local.tags
}

resource "aws_service_discovery_private_dns_namespace" "site" {
  name        = local.namespace
  description = "fedflow site ${var.site_name}: Dask scheduler discovery"
  vpc         = aws_vpc.site.id
  tags        = local.tags
}

resource "aws_service_discovery_service" "scheduler" {
  name = "dask-scheduler"
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.site.id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
  tags = local.tags
}

# --- site service -------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "site" {
  family                   = "${local.name_prefix}-site"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 2048
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.site.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "config"
  }
  volume {
    name = "state"
    efs_volume_configuration {
      file_system_id     = aws_efs_file_system.state.id
      transit_encryption = "ENABLED"
      authorization_config {
        access_point_id = aws_efs_access_point.state.id
        iam             = "ENABLED"
      }
    }
  }
  container_definitions = jsonencode([
    merge(local.hardening, {
      name        = "config"
      image       = var.image
      essential   = false
      entryPoint  = ["python", "-c"]
      command     = [local.write_config]
      environment = [{ name = "FEDFLOW_CONFIG_FILES", value = jsonencode(local.config_files) }]
      secrets = [
        { name = "TLS_SITE_CRT", valueFrom = "${var.tls_secret_arn}:site_crt::" },
        { name = "TLS_SITE_KEY", valueFrom = "${var.tls_secret_arn}:site_key::" },
        { name = "TLS_ORCHESTRATOR_CA", valueFrom = "${var.tls_secret_arn}:orchestrator_ca_crt::" },
      ]
      mountPoints      = [{ sourceVolume = "config", containerPath = local.config_dir, readOnly = false }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
    merge(local.hardening, {
      name         = "site"
      image        = var.image
      essential    = true
      command      = ["fedflow", "site", "serve", "--config", "${local.config_dir}/site.yaml"]
      dependsOn    = [{ containerName = "config", condition = "SUCCESS" }]
      portMappings = [{ containerPort = var.service_port, protocol = "tcp" }]
      environment = [
        { name = "DO_NOT_TRACK", value = "1" },
        { name = "AWS_REGION", value = data.aws_region.current.name },
      ]
      mountPoints = [
        { sourceVolume = "config", containerPath = local.config_dir, readOnly = true },
        { sourceVolume = "state", containerPath = local.state_dir, readOnly = false },
      ]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
  ])
  tags = local.tags
}

resource "aws_lb" "site" {
  name                             = "ff-${var.site_name}-nlb" # load balancer names: 32 characters
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = aws_subnet.public[*].id
  security_groups                  = [aws_security_group.lb.id]
  enable_deletion_protection       = true
  enable_cross_zone_load_balancing = true
  access_logs {
    bucket  = aws_s3_bucket.access_logs.id
    prefix  = "nlb"
    enabled = true
  }
  tags = local.tags
}

resource "aws_lb_target_group" "site" {
  name        = "ff-${var.site_name}-site"
  port        = var.service_port
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = aws_vpc.site.id
  health_check {
    protocol = "TCP"
  }
  tags = local.tags
}

resource "aws_lb_listener" "site" {
  # checkov:skip=CKV_AWS_2:TCP pass-through on purpose: the site service terminates mutual TLS itself so it can verify the orchestrator's client certificate.
  # checkov:skip=CKV_AWS_103:TCP pass-through on purpose (see above); the site service enforces TLS 1.2+.
  load_balancer_arn = aws_lb.site.arn
  port              = var.service_port
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.site.arn
  }
  tags = local.tags
}

resource "aws_ecs_service" "site" {
  name            = "site"
  cluster         = aws_ecs_cluster.site.id
  task_definition = aws_ecs_task_definition.site.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  # One writer of the audit chain: stop the old task before starting its replacement.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.site.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.site.arn
    container_name   = "site"
    container_port   = var.service_port
  }
  depends_on = [aws_lb_listener.site, aws_ecs_service.scheduler, aws_efs_mount_target.state]
  tags       = local.tags
}

# --- Dask scheduler and workers -----------------------------------------------------------------

resource "aws_ecs_task_definition" "scheduler" {
  family                   = "${local.name_prefix}-dask-scheduler"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.execution.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "scratch"
  }
  container_definitions = jsonencode([
    merge(local.hardening, {
      name      = "scheduler"
      image     = var.image
      essential = true
      # The dashboard stays off: nothing outside the site's security group may reach the cluster.
      command          = ["dask", "scheduler", "--port", "8786", "--no-dashboard", "--no-show"]
      portMappings     = [{ containerPort = 8786, protocol = "tcp" }]
      environment      = [{ name = "DASK_TEMPORARY_DIRECTORY", value = "/scratch" }]
      mountPoints      = [{ sourceVolume = "scratch", containerPath = "/scratch", readOnly = false }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
  ])
  tags = local.tags
}

resource "aws_ecs_service" "scheduler" {
  name            = "dask-scheduler"
  cluster         = aws_ecs_cluster.site.id
  task_definition = aws_ecs_task_definition.scheduler.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.site.id]
    assign_public_ip = false
  }
  service_registries {
    registry_arn = aws_service_discovery_service.scheduler.arn
  }
  tags = local.tags
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${local.name_prefix}-dask-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024 * var.dask_threads_per_worker
  memory                   = 4096 * var.dask_threads_per_worker
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "scratch"
  }
  container_definitions = jsonencode([
    merge(local.hardening, {
      name      = "worker"
      image     = var.image
      essential = true
      command = [
        "dask", "worker", local.site_config.dask.scheduler_address,
        "--nthreads", tostring(var.dask_threads_per_worker),
        "--worker-port", "8789", "--nanny-port", "8790", "--no-dashboard",
        "--local-directory", "/scratch",
      ]
      environment      = [{ name = "AWS_REGION", value = data.aws_region.current.name }]
      mountPoints      = [{ sourceVolume = "scratch", containerPath = "/scratch", readOnly = false }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
  ])
  tags = local.tags
}

resource "aws_ecs_service" "worker" {
  name            = "dask-worker"
  cluster         = aws_ecs_cluster.site.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.dask_workers
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.site.id]
    assign_public_ip = false
  }
  depends_on = [aws_ecs_service.scheduler]
  tags       = local.tags
}
