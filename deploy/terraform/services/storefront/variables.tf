# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
variable "region" {
  description = "The AWS region of the environment."
  type        = string
}

variable "state_bucket" {
  description = "The S3 bucket holding the Terraform states (the environment's among them)."
  type        = string
}

variable "image" {
  description = "The bazaar image, pinned by digest (<registry>/bazaar@sha256:...)."
  type        = string
}
