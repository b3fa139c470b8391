# Private networking. Tasks run in private subnets with no route to the internet: they reach S3,
# ECR, CloudWatch Logs, Secrets Manager and KMS through VPC endpoints. The only inbound path is a
# network load balancer in the public subnets whose security group admits the orchestrator's
# CIDR blocks on the service port, and passes TCP through so mutual TLS ends in the site service.

locals {
  azs = var.availability_zones
  # /20 VPC or larger: public subnets take the first /24s, private subnets /22s after them.
  public_subnets  = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnets = [for i in range(length(local.azs)) : cidrsubnet(var.vpc_cidr, 6, i + 1)]
  interface_endpoints = toset([
    "ecr.api", "ecr.dkr", "logs", "secretsmanager", "kms",
  ])
}

resource "aws_vpc" "site" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name_prefix })
}

# Deny everything on the default security group so nothing lands in it by accident.
resource "aws_default_security_group" "site" {
  vpc_id = aws_vpc.site.id
  tags   = merge(local.tags, { Name = "${local.name_prefix}-default-deny" })
}

resource "aws_subnet" "public" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.site.id
  cidr_block        = local.public_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(local.tags, { Name = "${local.name_prefix}-public-${count.index}" })
}

resource "aws_subnet" "private" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.site.id
  cidr_block        = local.private_subnets[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(local.tags, { Name = "${local.name_prefix}-private-${count.index}" })
}

resource "aws_internet_gateway" "site" {
  vpc_id = aws_vpc.site.id
  tags   = local.tags
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.site.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.site.id
  }
  tags = merge(local.tags, { Name = "${local.name_prefix}-public" })
}

resource "aws_route_table_association" "public" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# No default route: private subnets reach AWS services only through the endpoints below.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.site.id
  tags   = merge(local.tags, { Name = "${local.name_prefix}-private" })
}

resource "aws_route_table_association" "private" {
  count          = length(local.azs)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.site.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = local.tags
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = local.interface_endpoints
  vpc_id              = aws_vpc.site.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  tags                = local.tags
}

# --- flow logs ----------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/fedflow/${var.site_name}/vpc-flow"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.site.arn
  tags              = local.tags
}

resource "aws_flow_log" "site" {
  vpc_id          = aws_vpc.site.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow_logs.arn
  tags            = local.tags
}

# --- security groups ----------------------------------------------------------------------------

resource "aws_security_group" "lb" {
  name        = "${local.name_prefix}-lb"
  description = "fedflow site load balancer: the orchestrator's addresses only"
  vpc_id      = aws_vpc.site.id
  tags        = local.tags
}

# count, not for_each: the addresses may be unknown until the orchestrator's are allocated in
# the same apply, while their number is known.
resource "aws_vpc_security_group_ingress_rule" "lb_from_orchestrator" {
  count             = length(var.orchestrator_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "site service (mutual TLS) from the orchestrator"
  cidr_ipv4         = var.orchestrator_cidrs[count.index]
  ip_protocol       = "tcp"
  from_port         = var.service_port
  to_port           = var.service_port
}

resource "aws_vpc_security_group_egress_rule" "lb_to_site" {
  security_group_id            = aws_security_group.lb.id
  description                  = "forward to the site service tasks"
  referenced_security_group_id = aws_security_group.site.id
  ip_protocol                  = "tcp"
  from_port                    = var.service_port
  to_port                      = var.service_port
}

resource "aws_security_group" "site" {
  name        = "${local.name_prefix}-site"
  description = "fedflow site service, Dask scheduler and workers"
  vpc_id      = aws_vpc.site.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "site_from_lb" {
  security_group_id            = aws_security_group.site.id
  description                  = "site service from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = var.service_port
  to_port                      = var.service_port
}

resource "aws_vpc_security_group_ingress_rule" "site_dask" {
  security_group_id            = aws_security_group.site.id
  description                  = "Dask scheduler, worker and nanny ports between the site's own tasks"
  referenced_security_group_id = aws_security_group.site.id
  ip_protocol                  = "tcp"
  from_port                    = 8786
  to_port                      = 8790
}

resource "aws_vpc_security_group_egress_rule" "site_dask" {
  security_group_id            = aws_security_group.site.id
  description                  = "Dask traffic between the site's own tasks"
  referenced_security_group_id = aws_security_group.site.id
  ip_protocol                  = "tcp"
  from_port                    = 8786
  to_port                      = 8790
}

resource "aws_vpc_security_group_egress_rule" "site_endpoints" {
  security_group_id            = aws_security_group.site.id
  description                  = "HTTPS to the interface VPC endpoints"
  referenced_security_group_id = aws_security_group.endpoints.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}

resource "aws_vpc_security_group_egress_rule" "site_s3" {
  security_group_id = aws_security_group.site.id
  description       = "HTTPS to S3 through the gateway endpoint"
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group" "endpoints" {
  name        = "${local.name_prefix}-endpoints"
  description = "interface VPC endpoints: HTTPS from the site's tasks"
  vpc_id      = aws_vpc.site.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_site" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the site's tasks"
  referenced_security_group_id = aws_security_group.site.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}
