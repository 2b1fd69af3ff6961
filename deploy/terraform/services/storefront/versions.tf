# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Its own state. bucket, region and the lock come from -backend-config
  # (deploy/terraform/README.md).
  backend "s3" {
    key = "bazaar/services/storefront.tfstate"
  }
}
