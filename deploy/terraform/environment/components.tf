# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
#
# The gateway and the modules of the registry: each gets a security group here, and a
# root of its own under services/.
locals {
  components = ["gateway", "identity", "catalog", "cart", "payments", "orders", "notifications", "analytics", "storefront"]

  # The Secrets Manager secrets (bazaar/<name>) each component's tasks read: its
  # execution role may read these and no other. A module reads its own database URL
  # (its own PostgreSQL role, ADR 0008).
  component_secrets = {
    gateway       = ["jwt-secret", "service-secret", "metrics-token"]
    identity      = ["database-url-identity", "jwt-secret", "service-secret", "metrics-token"]
    catalog       = ["database-url-catalog", "service-secret", "metrics-token"]
    cart          = ["database-url-cart", "service-secret", "metrics-token"]
    payments      = ["database-url-payments", "service-secret", "metrics-token"]
    orders        = ["database-url-orders", "service-secret", "metrics-token"]
    notifications = ["database-url-notifications", "service-secret", "metrics-token"]
    analytics     = ["database-url-analytics", "service-secret", "metrics-token"]
    storefront    = ["database-url-storefront", "service-secret", "metrics-token"]
  }

  # Each module's one-off migration task: the module's secrets plus the
  # administrator's database URL, which nothing else may read.
  migration_secrets = {
    identity      = ["database-url-identity", "jwt-secret", "service-secret", "metrics-token", "database-admin-url"]
    catalog       = ["database-url-catalog", "service-secret", "metrics-token", "database-admin-url"]
    cart          = ["database-url-cart", "service-secret", "metrics-token", "database-admin-url"]
    payments      = ["database-url-payments", "service-secret", "metrics-token", "database-admin-url"]
    orders        = ["database-url-orders", "service-secret", "metrics-token", "database-admin-url"]
    notifications = ["database-url-notifications", "service-secret", "metrics-token", "database-admin-url"]
    analytics     = ["database-url-analytics", "service-secret", "metrics-token", "database-admin-url"]
    storefront    = ["database-url-storefront", "service-secret", "metrics-token", "database-admin-url"]
  }
}
