# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
#
# gateway on ECS Fargate, from modules/service, reading the environment root's outputs.
#
#   terraform init -backend-config=../../backend.hcl && terraform apply

provider "aws" {
  region = var.region
}

data "terraform_remote_state" "environment" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "bazaar/environment.tfstate"
    region = var.region
  }
}

locals {
  environment = data.terraform_remote_state.environment.outputs
}

module "service" {
  source = "../../modules/service"

  name                             = "gateway"
  image                            = var.image
  command                          = ["serve", "--only", "gateway"]
  cluster_arn                      = local.environment.cluster_arn
  subnet_ids                       = local.environment.private_subnet_ids
  security_group_id                = local.environment.security_group_ids["gateway"]
  service_discovery_namespace_id   = local.environment.service_discovery_namespace_id
  service_discovery_namespace_name = local.environment.service_discovery_namespace_name
  execution_role_arn               = local.environment.execution_role_arns["gateway"]
  task_role_arn                    = local.environment.task_role_arn
  kms_key_arn                      = local.environment.kms_key_arn
  target_group_arn                 = local.environment.gateway_target_group_arn

  caller_security_group_ids = {
    load_balancer = local.environment.load_balancer_security_group_id
  }

  environment = {
    BAZAAR_HTTP_ADDR          = "0.0.0.0:8080"
    BAZAAR_DATA_DIR           = "/data"
    BAZAAR_LOG_FORMAT         = "json"
    BAZAAR_PEER_IDENTITY      = "http://identity.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_CATALOG       = "http://catalog.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_CART          = "http://cart.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_PAYMENTS      = "http://payments.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_ORDERS        = "http://orders.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_NOTIFICATIONS = "http://notifications.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_ANALYTICS     = "http://analytics.${local.environment.service_discovery_namespace_name}:8080"
    BAZAAR_PEER_STOREFRONT    = "http://storefront.${local.environment.service_discovery_namespace_name}:8080"
  }

  secrets = {
    BAZAAR_JWT_SECRET     = local.environment.secret_arns["jwt-secret"]
    BAZAAR_SERVICE_SECRET = local.environment.secret_arns["service-secret"]
    BAZAAR_METRICS_TOKEN  = local.environment.secret_arns["metrics-token"]
  }
}
