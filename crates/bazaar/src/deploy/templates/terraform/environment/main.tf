# What every bazaar component on ECS shares: the cluster, the Cloud Map namespace, a
# security group per component (their ingress rules are in each component's root),
# the load balancer in front of the gateway, RDS PostgreSQL, the secrets and the
# roles. NATS is not here: JetStream needs durable disks, which Fargate tasks do not
# have (deploy/terraform/README.md).

provider "aws" {
  region = var.region
}

data "aws_caller_identity" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  port       = 8080
  account_id = data.aws_caller_identity.current.account_id
  # One execution role per component and per module's migration task
  # (`<module>-migrate`), each reading its own secrets only (components.tf).
  execution_secrets = merge(
    local.component_secrets,
    { for name, secrets in local.migration_secrets : "${name}-migrate" => secrets },
  )
  secrets = distinct(flatten(values(local.execution_secrets)))
}

resource "aws_kms_key" "this" {
  description         = "bazaar: logs, secrets, database"
  enable_key_rotation = true

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "Account"
        Effect    = "Allow"
        Principal = { AWS = "arn:aws:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "Logs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
        Resource  = "*"
      },
    ]
  })
}

resource "aws_ecs_cluster" "this" {
  name = "bazaar"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name = "bazaar.internal"
  vpc  = var.vpc_id
}

# --- security groups ------------------------------------------------------------------

resource "aws_security_group" "component" {
  #checkov:skip=CKV2_AWS_5:each group is attached to its component's ECS service, in that component's own root (services/<name>)
  for_each = toset(local.components)

  name        = "bazaar-${each.key}"
  description = "bazaar ${each.key}: ingress only from its callers (its root adds the rules)"
  vpc_id      = var.vpc_id
}

# Out of a task: the AWS APIs and the image registry (HTTPS), other components,
# PostgreSQL and NATS inside the VPC.
resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = aws_security_group.component

  security_group_id = each.value.id
  description       = "AWS APIs and the image registry"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  for_each = {
    for pair in setproduct(keys(aws_security_group.component), [local.port, 5432, 4222]) :
    "${pair[0]}-${pair[1]}" => { name = pair[0], port = pair[1] }
  }

  security_group_id = aws_security_group.component[each.value.name].id
  description       = "components, PostgreSQL and NATS in the VPC"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_security_group" "load_balancer" {
  name        = "bazaar-load-balancer"
  description = "bazaar's public load balancer"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  security_group_id = aws_security_group.load_balancer.id
  description       = "HTTPS from clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "gateway" {
  security_group_id            = aws_security_group.load_balancer.id
  description                  = "to the gateway"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.component["gateway"].id
}

resource "aws_security_group" "database" {
  name        = "bazaar-database"
  description = "bazaar's PostgreSQL: from the modules only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "database" {
  for_each = { for name, group in aws_security_group.component : name => group if name != "gateway" }

  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value.id
}

# --- the load balancer in front of the gateway ------------------------------------------

resource "aws_lb" "this" {
  #checkov:skip=CKV2_AWS_76:the WAF web ACL is given (var.web_acl_arn), not made here: include AWSManagedRulesKnownBadInputsRuleSet in it
  name                       = "bazaar"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.load_balancer.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true

  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = "bazaar"
    enabled = true
  }
}

resource "aws_wafv2_web_acl_association" "this" {
  resource_arn = aws_lb.this.arn
  web_acl_arn  = var.web_acl_arn
}

resource "aws_lb_target_group" "gateway" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; the gateway's tasks are in private subnets and speak HTTP
  name        = "bazaar-gateway"
  port        = local.port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  health_check {
    path                = "/health/ready"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# --- PostgreSQL -------------------------------------------------------------------------

resource "aws_db_subnet_group" "this" {
  name       = "bazaar"
  subnet_ids = var.private_subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name   = "bazaar-postgres17"
  family = "postgres17"

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }
}

resource "aws_iam_role" "database_monitoring" {
  name = "bazaar-database-monitoring"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "database_monitoring" {
  role       = aws_iam_role.database_monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV2_AWS_69:bazaar's PostgreSQL client is built without TLS (sqlx has no tls feature in the workspace); the connection stays in the VPC, to a security group admitting only the modules
  identifier                          = "bazaar"
  engine                              = "postgres"
  engine_version                      = "17"
  instance_class                      = var.db_instance_class
  allocated_storage                   = var.db_allocated_storage
  db_name                             = "bazaar"
  username                            = "bazaar"
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = aws_kms_key.this.arn
  db_subnet_group_name                = aws_db_subnet_group.this.name
  parameter_group_name                = aws_db_parameter_group.this.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  publicly_accessible                 = false
  multi_az                            = true
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.this.arn
  iam_database_authentication_enabled = true
  backup_retention_period             = 14
  deletion_protection                 = true
  auto_minor_version_upgrade          = true
  copy_tags_to_snapshot               = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.database_monitoring.arn
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.this.arn
  final_snapshot_identifier           = "bazaar-final"
}

# --- secrets: created empty; the operator puts their values -----------------------------

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:bazaar's secrets rotate by setting the new value and restarting the tasks (docs/operations.md, Rotating secrets), not by a rotation Lambda
  for_each = toset(local.secrets)

  name       = "bazaar/${each.key}"
  kms_key_id = aws_kms_key.this.arn
}

# --- roles ------------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  for_each = local.execution_secrets

  name = "bazaar-${each.key}-execution"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  for_each = aws_iam_role.execution

  role       = each.value.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# Each execution role reads its own component's secrets and nothing else: a module's
# database URL only its tasks, the administrator's only the migration tasks.
resource "aws_iam_role_policy" "execution_secrets" {
  for_each = local.execution_secrets

  name = "bazaar-${each.key}-secrets"
  role = aws_iam_role.execution[each.key].id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = [for secret in each.value : aws_secretsmanager_secret.this[secret].arn]
      },
      {
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [aws_kms_key.this.arn]
      },
    ]
  })
}

# bazaar calls no AWS API: its tasks' role has no policy.
resource "aws_iam_role" "task" {
  name = "bazaar-task"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}
