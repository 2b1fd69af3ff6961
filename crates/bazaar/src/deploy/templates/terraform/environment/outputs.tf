output "cluster_arn" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "private_subnet_ids" {
  description = "Where the tasks run."
  value       = var.private_subnet_ids
}

output "security_group_ids" {
  description = "Each component's security group, by name."
  value       = { for name, group in aws_security_group.component : name => group.id }
}

output "load_balancer_security_group_id" {
  description = "The load balancer's security group (the gateway's only caller)."
  value       = aws_security_group.load_balancer.id
}

output "gateway_target_group_arn" {
  description = "The load balancer's target group for the gateway."
  value       = aws_lb_target_group.gateway.arn
}

output "service_discovery_namespace_id" {
  description = "The Cloud Map namespace."
  value       = aws_service_discovery_private_dns_namespace.this.id
}

output "service_discovery_namespace_name" {
  description = "Its DNS name."
  value       = aws_service_discovery_private_dns_namespace.this.name
}

output "execution_role_arns" {
  description = "The execution role of each component's tasks, and of each module's migration task (<module>-migrate), by name."
  value       = { for name, role in aws_iam_role.execution : name => role.arn }
}

output "task_role_arn" {
  description = "The tasks' role."
  value       = aws_iam_role.task.arn
}

output "kms_key_arn" {
  description = "The key encrypting logs, secrets and the database."
  value       = aws_kms_key.this.arn
}

output "secret_arns" {
  description = "The Secrets Manager secrets, by name (values put by the operator)."
  value       = { for name, secret in aws_secretsmanager_secret.this : name => secret.arn }
}

output "nats_url" {
  description = "NATS with JetStream."
  value       = var.nats_url
}

output "load_balancer_dns_name" {
  description = "Point the public name at this."
  value       = aws_lb.this.dns_name
}

output "database_address" {
  description = "RDS PostgreSQL's address, for the database URL secrets."
  value       = aws_db_instance.this.address
}
