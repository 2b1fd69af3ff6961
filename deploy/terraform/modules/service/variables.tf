variable "name" {
  description = "The component: the gateway or a module (its Cloud Map name, peers reach it as http://<name>.<namespace>:8080)."
  type        = string
}

variable "image" {
  description = "The bazaar image, pinned by digest (<registry>/bazaar@sha256:...)."
  type        = string
}

variable "command" {
  description = "The container's command (the image's entrypoint is /bazaar)."
  type        = list(string)
}

variable "environment" {
  description = "Settings that are not secret, as BAZAAR_* variables."
  type        = map(string)
}

variable "secrets" {
  description = "Secret settings: BAZAAR_* variable name to the ARN of its Secrets Manager secret."
  type        = map(string)
}

variable "migration_secrets" {
  description = "A module's migration task (bazaar migrate): BAZAAR_* variable name to the ARN of its secret, the administrator's database URL among them. Empty (the gateway): no migration task."
  type        = map(string)
  default     = {}
}

variable "migration_execution_role_arn" {
  description = "The migration task's execution role (the only one that may read the administrator's database URL); null without migration_secrets."
  type        = string
  default     = null
}

variable "cluster_arn" {
  description = "The ECS cluster (the environment root's output)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the tasks."
  type        = list(string)
}

variable "security_group_id" {
  description = "This component's security group (created by the environment root, so callers can name it before this root exists)."
  type        = string
}

variable "caller_security_group_ids" {
  description = "Who may call this component, by name: the gateway and the modules whose contracts call it (the module registry), or the load balancer for the gateway."
  type        = map(string)
}

variable "service_discovery_namespace_id" {
  description = "The Cloud Map private DNS namespace."
  type        = string
}

variable "service_discovery_namespace_name" {
  description = "Its DNS name (peers are http://<name>.<this>:8080)."
  type        = string
}

variable "execution_role_arn" {
  description = "This component's task execution role (pulls the image, reads this component's secrets and no other's, writes the logs)."
  type        = string
}

variable "task_role_arn" {
  description = "The task role (bazaar calls no AWS API: a role without policies)."
  type        = string
}

variable "kms_key_arn" {
  description = "The KMS key encrypting the log group."
  type        = string
}

variable "target_group_arn" {
  description = "The load balancer's target group (the gateway only; null for modules)."
  type        = string
  default     = null
}

variable "desired_count" {
  description = "Tasks at start; autoscaling moves it between min_count and max_count."
  type        = number
  default     = 2
}

variable "min_count" {
  description = "The fewest tasks: two, so one may fail or be replaced."
  type        = number
  default     = 2
}

variable "max_count" {
  description = "The most tasks autoscaling may run."
  type        = number
  default     = 10
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 1024
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the logs."
  type        = number
  default     = 365
}
