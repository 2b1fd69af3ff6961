# One bazaar component on ECS Fargate: its task definition, service, autoscaling on CPU,
# log group, Cloud Map name, and the ingress rules of its security group (only from
# its callers' security groups, on the HTTP port). A module also gets a one-off
# migration task definition (`bazaar migrate`), run before its service: it alone holds
# the administrator's database URL (ADR 0008).

locals {
  port = 8080
}

data "aws_region" "current" {}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/bazaar/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_vpc_security_group_ingress_rule" "callers" {
  for_each = var.caller_security_group_ids

  security_group_id            = var.security_group_id
  referenced_security_group_id = each.value
  description                  = "${each.key} calls ${var.name}"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
}

resource "aws_service_discovery_service" "this" {
  name = var.name

  dns_config {
    namespace_id   = var.service_discovery_namespace_id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}

resource "aws_ecs_task_definition" "this" {
  #checkov:skip=CKV_AWS_249:the roles are two roles of the environment root (aws_iam_role.execution and aws_iam_role.task), read from its state, which checkov cannot resolve
  family                   = "bazaar-${var.name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name                   = "bazaar"
      image                  = var.image
      command                = var.command
      essential              = true
      readonlyRootFilesystem = true
      user                   = "65532:65532"
      portMappings           = [{ name = "http", containerPort = local.port, protocol = "tcp" }]
      environment            = [for key, value in var.environment : { name = key, value = value }]
      secrets                = [for key, arn in var.secrets : { name = key, valueFrom = arn }]
      mountPoints            = [{ sourceVolume = "data", containerPath = "/data", readOnly = false }]
      linuxParameters        = { capabilities = { drop = ["ALL"] } }
      stopTimeout            = 45
      # The image has no shell: bazaar checks itself.
      healthCheck = {
        command     = ["CMD", "/bazaar", "health", "--url", "http://127.0.0.1:${local.port}/health/ready"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = var.name
        }
      }
    }
  ])

  volume {
    name = "data"
  }
}

# The module's migration step, run as a one-off task (deploy/terraform/README.md):
# as the administrator (BAZAAR_DATABASE_ADMIN_URL) it creates or updates the module's
# own PostgreSQL role and hands it the module's schema, then migrates it as that role.
# Its execution role alone may read the administrator's secret; the service's tasks
# never hold it.
resource "aws_ecs_task_definition" "migrate" {
  #checkov:skip=CKV_AWS_249:the roles are two roles of the environment root (aws_iam_role.execution and aws_iam_role.task), read from its state, which checkov cannot resolve
  count = length(var.migration_secrets) > 0 ? 1 : 0

  family                   = "bazaar-${var.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = var.migration_execution_role_arn
  task_role_arn            = var.task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([
    {
      name                   = "migrate"
      image                  = var.image
      command                = ["migrate"]
      essential              = true
      readonlyRootFilesystem = true
      user                   = "65532:65532"
      environment            = [for key, value in merge(var.environment, { BAZAAR_ONLY = var.name }) : { name = key, value = value }]
      secrets                = [for key, arn in var.migration_secrets : { name = key, valueFrom = arn }]
      mountPoints            = [{ sourceVolume = "data", containerPath = "/data", readOnly = false }]
      linuxParameters        = { capabilities = { drop = ["ALL"] } }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "${var.name}-migrate"
        }
      }
    }
  ])

  volume {
    name = "data"
  }
}

resource "aws_ecs_service" "this" {
  name                   = var.name
  cluster                = var.cluster_arn
  task_definition        = aws_ecs_task_definition.this.arn
  desired_count          = var.desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE"
  enable_execute_command = false
  # A new task is healthy before an old one stops.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }

  service_registries {
    registry_arn = aws_service_discovery_service.this.arn
  }

  dynamic "load_balancer" {
    for_each = var.target_group_arn == null ? [] : [var.target_group_arn]

    content {
      target_group_arn = load_balancer.value
      container_name   = "bazaar"
      container_port   = local.port
    }
  }

  lifecycle {
    # Autoscaling owns the count after the first apply.
    ignore_changes = [desired_count]
  }
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${element(split("/", var.cluster_arn), 1)}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "bazaar-${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = 70

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
