# Public subnets hold the NAT gateways (fixed egress addresses); private subnets hold the tasks,
# the database and the internal load balancer of the Prefect API and UI.

locals {
  azs             = var.availability_zones
  public_subnets  = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnets = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 6, i + 1)]
}

resource "aws_vpc" "orchestrator" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name_prefix })
}

resource "aws_default_security_group" "orchestrator" {
  vpc_id = aws_vpc.orchestrator.id
  tags   = merge(local.tags, { Name = "${local.name_prefix}-default-deny" })
}

resource "aws_subnet" "public" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.orchestrator.id
  cidr_block        = local.public_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(local.tags, { Name = "${local.name_prefix}-public-${count.index}" })
}

resource "aws_subnet" "private" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.orchestrator.id
  cidr_block        = local.private_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(local.tags, { Name = "${local.name_prefix}-private-${count.index}" })
}

resource "aws_internet_gateway" "orchestrator" {
  vpc_id = aws_vpc.orchestrator.id
  tags   = local.tags
}

resource "aws_eip" "nat" {
  count  = length(local.azs)
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name_prefix}-nat-${count.index}" })
}

resource "aws_nat_gateway" "orchestrator" {
  count         = length(local.azs)
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(local.tags, { Name = "${local.name_prefix}-${count.index}" })
  depends_on    = [aws_internet_gateway.orchestrator]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.orchestrator.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.orchestrator.id
  }
  tags = merge(local.tags, { Name = "${local.name_prefix}-public" })
}

resource "aws_route_table_association" "public" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  count  = length(local.azs)
  vpc_id = aws_vpc.orchestrator.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.orchestrator[count.index].id
  }
  tags = merge(local.tags, { Name = "${local.name_prefix}-private-${count.index}" })
}

resource "aws_route_table_association" "private" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

resource "aws_flow_log" "orchestrator" {
  vpc_id          = aws_vpc.orchestrator.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
  tags            = local.tags
}

# --- security groups ----------------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name        = "${local.name_prefix}-lb"
  description = "Prefect API and UI load balancer: operators only"
  vpc_id      = aws_vpc.orchestrator.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_from_operators" {
  for_each          = toset(var.operator_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from platform operators"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "lb_to_server" {
  security_group_id            = aws_security_group.lb.id
  description                  = "forward to the Prefect server"
  referenced_security_group_id = aws_security_group.server.id
  ip_protocol                  = "tcp"
  from_port                    = 4200
  to_port                      = 4200
}

resource "aws_security_group" "server" {
  name        = "${local.name_prefix}-prefect-server"
  description = "Prefect server tasks"
  vpc_id      = aws_vpc.orchestrator.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "server_from_lb" {
  security_group_id            = aws_security_group.server.id
  description                  = "Prefect API from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = 4200
  to_port                      = 4200
}

resource "aws_vpc_security_group_ingress_rule" "server_from_worker" {
  security_group_id            = aws_security_group.server.id
  description                  = "Prefect API from the flow worker"
  referenced_security_group_id = aws_security_group.worker.id
  ip_protocol                  = "tcp"
  from_port                    = 4200
  to_port                      = 4200
}

resource "aws_vpc_security_group_egress_rule" "server_to_db" {
  security_group_id            = aws_security_group.server.id
  description                  = "PostgreSQL"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_egress_rule" "server_https" {
  security_group_id = aws_security_group.server.id
  description       = "HTTPS to AWS APIs (ECR, logs, Secrets Manager) through NAT"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group" "worker" {
  name        = "${local.name_prefix}-flow-worker"
  description = "Prefect worker running the federated flows"
  vpc_id      = aws_vpc.orchestrator.id
  tags        = local.tags
}

resource "aws_vpc_security_group_egress_rule" "worker_to_server" {
  security_group_id            = aws_security_group.worker.id
  description                  = "Prefect API"
  referenced_security_group_id = aws_security_group.server.id
  ip_protocol                  = "tcp"
  from_port                    = 4200
  to_port                      = 4200
}

resource "aws_vpc_security_group_egress_rule" "worker_to_sites" {
  for_each          = toset([for p in var.site_ports : tostring(p)])
  security_group_id = aws_security_group.worker.id
  description       = "mutual TLS to the sites' service port ${each.value}"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
}

resource "aws_vpc_security_group_egress_rule" "worker_https" {
  security_group_id = aws_security_group.worker.id
  description       = "HTTPS to AWS APIs (ECR, logs, Secrets Manager, S3) through NAT"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group" "db" {
  name        = "${local.name_prefix}-db"
  description = "Prefect PostgreSQL: the Prefect server only"
  vpc_id      = aws_vpc.orchestrator.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "db_from_server" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the Prefect server"
  referenced_security_group_id = aws_security_group.server.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}
