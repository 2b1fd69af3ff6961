output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.this.name
}

output "url" {
  description = "Where peers reach this component."
  value       = "http://${var.name}.${var.service_discovery_namespace_name}:8080"
}

output "migration_task_definition" {
  description = "The module's one-off migration task (run it before the service's first start, and whenever a module's role or password changes); null for the gateway."
  value       = one(aws_ecs_task_definition.migrate[*].family)
}
