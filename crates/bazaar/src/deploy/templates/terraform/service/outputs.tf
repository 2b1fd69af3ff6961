output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.this.name
}

output "url" {
  description = "Where peers reach this component."
  value       = "http://${var.name}.${var.service_discovery_namespace_name}:8080"
}
