# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
#
# The gateway and the modules of the registry: each gets a security group here, and a
# root of its own under services/.
locals {
  components = ["gateway", "identity", "catalog", "cart", "payments", "orders", "notifications", "analytics", "storefront"]
}
