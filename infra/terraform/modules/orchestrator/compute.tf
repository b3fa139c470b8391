# ECS Fargate: the Prefect server (API and UI) behind an internal HTTPS load balancer, and one
# Prefect worker that runs the federated flows. The worker finds the server through a private
# Cloud Map name; operators reach the UI through the load balancer only.

locals {
  log_options = {
    "awslogs-group"         = aws_cloudwatch_log_group.tasks.name
    "awslogs-region"        = data.aws_region.current.name
    "awslogs-stream-prefix" = "prefect"
  }
  hardening = {
    user                   = "10001"
    readonlyRootFilesystem = true
    privileged             = false
    linuxParameters        = { initProcessEnabled = true, capabilities = { drop = ["ALL"] } }
  }
  no_telemetry = [
    { name = "DO_NOT_TRACK", value = "1" },
    { name = "PREFECT_SERVER_ANALYTICS_ENABLED", value = "false" },
    { name = "PREFECT_HOME", value = "/tmp/prefect" },
  ]
  db_secret = aws_db_instance.prefect.master_user_secret[0].secret_arn

  # The worker's identity files: written from the identity secret into the config volume.
  write_identity = join("\n", [
    "import os, pathlib",
    "root = pathlib.Path('${local.config_dir}/identity')",
    "root.mkdir(parents=True, exist_ok=True)",
    "names = {'client.crt': 'CLIENT_CRT', 'client.key': 'CLIENT_KEY', 'sites-ca.crt': 'SITES_CA_CRT', 'checkpoint-signing.key': 'CHECKPOINT_SIGNING_KEY'}",
    "for name, variable in names.items():",
    "    (root / name).write_text(os.environ[variable])",
    "    (root / name).chmod(0o600)",
  ])
}

resource "aws_ecs_cluster" "orchestrator" {
  name = "${local.name_prefix}-orchestrator"
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = local.tags
}

resource "aws_service_discovery_private_dns_namespace" "orchestrator" {
  name        = local.namespace
  description = "fedflow orchestrator ${var.name}: Prefect server discovery"
  vpc         = aws_vpc.orchestrator.id
  tags        = local.tags
}

resource "aws_service_discovery_service" "server" {
  name = "prefect-server"
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.orchestrator.id
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

# --- Prefect server -----------------------------------------------------------------------------

resource "aws_ecs_task_definition" "server" {
  family                   = "${local.name_prefix}-prefect-server"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 2048
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.server.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([
    merge(local.hardening, {
      name         = "prefect-server"
      image        = var.image
      essential    = true
      command      = ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
      portMappings = [{ containerPort = 4200, protocol = "tcp" }]
      environment = concat(local.no_telemetry, [
        { name = "PREFECT_SERVER_DATABASE_DRIVER", value = "postgresql+asyncpg" },
        { name = "PREFECT_SERVER_DATABASE_HOST", value = aws_db_instance.prefect.address },
        { name = "PREFECT_SERVER_DATABASE_PORT", value = tostring(aws_db_instance.prefect.port) },
        { name = "PREFECT_SERVER_DATABASE_NAME", value = aws_db_instance.prefect.db_name },
        { name = "PREFECT_SERVER_DATABASE_USER", value = aws_db_instance.prefect.username },
        { name = "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_ENABLED", value = "true" },
        { name = "PREFECT_UI_API_URL", value = "/api" },
      ])
      secrets          = [{ name = "PREFECT_SERVER_DATABASE_PASSWORD", valueFrom = "${local.db_secret}:password::" }]
      mountPoints      = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
  ])
  tags = local.tags
}

resource "aws_lb" "prefect" {
  # checkov:skip=CKV2_AWS_28:The load balancer is internal (operators reach it over VPN or peering) and admits operator_cidrs only; WAF protects internet-facing endpoints.
  name                       = "ff-${var.name}-prefect" # load balancer names: 32 characters
  load_balancer_type         = "application"
  internal                   = true
  subnets                    = aws_subnet.private[*].id
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  access_logs {
    bucket  = aws_s3_bucket.access_logs.id
    prefix  = "alb"
    enabled = true
  }
  tags = local.tags
}

resource "aws_lb_target_group" "prefect" {
  name        = "ff-${var.name}-prefect"
  port        = 4200
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = aws_vpc.orchestrator.id
  health_check {
    path     = "/api/health"
    protocol = "HTTP"
  }
  tags = local.tags
}

resource "aws_lb_listener" "prefect" {
  load_balancer_arn = aws_lb.prefect.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.prefect.arn
  }
  tags = local.tags
}

resource "aws_ecs_service" "server" {
  name            = "prefect-server"
  cluster         = aws_ecs_cluster.orchestrator.id
  task_definition = aws_ecs_task_definition.server.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.server.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.prefect.arn
    container_name   = "prefect-server"
    container_port   = 4200
  }
  service_registries {
    registry_arn = aws_service_discovery_service.server.arn
  }
  depends_on = [aws_lb_listener.prefect]
  tags       = local.tags
}

# --- flow worker --------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "worker" {
  family                   = "${local.name_prefix}-flow-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 4096
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "config"
  }
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([
    merge(local.hardening, {
      name       = "identity"
      image      = var.image
      essential  = false
      entryPoint = ["python", "-c"]
      command    = [local.write_identity]
      secrets = [
        { name = "CLIENT_CRT", valueFrom = "${var.identity_secret_arn}:client_crt::" },
        { name = "CLIENT_KEY", valueFrom = "${var.identity_secret_arn}:client_key::" },
        { name = "SITES_CA_CRT", valueFrom = "${var.identity_secret_arn}:sites_ca_crt::" },
        { name = "CHECKPOINT_SIGNING_KEY", valueFrom = "${var.identity_secret_arn}:checkpoint_signing_key::" },
      ]
      mountPoints      = [{ sourceVolume = "config", containerPath = local.config_dir, readOnly = false }]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
    merge(local.hardening, {
      name      = "flow-worker"
      image     = var.image
      essential = true
      command   = ["prefect", "worker", "start", "--pool", "fedflow-${var.name}", "--type", "process"]
      dependsOn = [{ containerName = "identity", condition = "SUCCESS" }]
      environment = concat(local.no_telemetry, [
        { name = "PREFECT_API_URL", value = local.prefect_api },
        { name = "FEDFLOW_CLIENT_CERT", value = "${local.config_dir}/identity/client.crt" },
        { name = "FEDFLOW_CLIENT_KEY", value = "${local.config_dir}/identity/client.key" },
        { name = "FEDFLOW_SITES_CA", value = "${local.config_dir}/identity/sites-ca.crt" },
        { name = "FEDFLOW_CHECKPOINT_SIGNING_KEY", value = "${local.config_dir}/identity/checkpoint-signing.key" },
        { name = "FEDFLOW_CHECKPOINT_LOCATION", value = "s3://${aws_s3_bucket.checkpoints.bucket}/checkpoints" },
        { name = "FEDFLOW_SITE_ENDPOINTS", value = jsonencode(var.site_endpoints) },
      ])
      mountPoints = [
        { sourceVolume = "config", containerPath = local.config_dir, readOnly = true },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      logConfiguration = { logDriver = "awslogs", options = local.log_options }
    }),
  ])
  tags = local.tags
}

resource "aws_ecs_service" "worker" {
  name            = "flow-worker"
  cluster         = aws_ecs_cluster.orchestrator.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }
  depends_on = [aws_ecs_service.server]
  tags       = local.tags
}
