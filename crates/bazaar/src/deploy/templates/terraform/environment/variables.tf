variable "region" {
  description = "The AWS region."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the environment runs in."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer (two or more zones)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks and the database (two or more zones), with a route to the AWS APIs (NAT or VPC endpoints)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "The ACM certificate of the public HTTPS listener."
  type        = string
}

variable "web_acl_arn" {
  description = "The WAFv2 web ACL in front of the load balancer."
  type        = string
}

variable "access_logs_bucket" {
  description = "An existing S3 bucket receiving the load balancer's access logs."
  type        = string
}

variable "nats_url" {
  description = "NATS with JetStream (nats://...): a 3-node cluster with sync_interval always, outside this root (deploy/terraform/README.md)."
  type        = string
}

variable "db_instance_class" {
  description = "The RDS PostgreSQL instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "RDS storage (GiB)."
  type        = number
  default     = 50
}
