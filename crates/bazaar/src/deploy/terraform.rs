//! Terraform for ECS Fargate (`deploy/terraform`): one shared module
//! (`modules/service`: task definition, service, autoscaling, log group, Cloud Map
//! name, its security group's ingress from its callers), one root per component with
//! its own state (`services/<name>`), and the environment root (cluster, load
//! balancer in front of the gateway, RDS PostgreSQL, a security group per component,
//! secrets, roles). Adding a module adds one root and one security group.
//!
//! The files are formatted as `terraform fmt` would (two-space indent, `=` aligned
//! in runs of one-line attributes): scripts/check-terraform.py holds them to it.

use std::fmt::Write as _;

use chassis::module::Registry;

use super::{Component, File, PORT, components, header};
use crate::topology::holds_jwt_secret;

const MODULE_MAIN: &str = include_str!("templates/terraform/service/main.tf");
const MODULE_VARIABLES: &str = include_str!("templates/terraform/service/variables.tf");
const MODULE_OUTPUTS: &str = include_str!("templates/terraform/service/outputs.tf");
const MODULE_VERSIONS: &str = include_str!("templates/terraform/service/versions.tf");
const ENVIRONMENT_MAIN: &str = include_str!("templates/terraform/environment/main.tf");
const ENVIRONMENT_VARIABLES: &str = include_str!("templates/terraform/environment/variables.tf");
const README: &str = include_str!("templates/terraform/README.md");
const ENVIRONMENT_OUTPUTS: &str = include_str!("templates/terraform/environment/outputs.tf");

pub(super) fn render(registry: &Registry) -> Vec<File> {
    let components = components(registry);
    let mut files = vec![
        File::new("terraform/modules/service/main.tf", MODULE_MAIN),
        File::new("terraform/modules/service/variables.tf", MODULE_VARIABLES),
        File::new("terraform/modules/service/outputs.tf", MODULE_OUTPUTS),
        File::new("terraform/modules/service/versions.tf", MODULE_VERSIONS),
        File::new("terraform/environment/main.tf", ENVIRONMENT_MAIN),
        File::new("terraform/environment/variables.tf", ENVIRONMENT_VARIABLES),
        File::new("terraform/environment/outputs.tf", ENVIRONMENT_OUTPUTS),
        File::new(
            "terraform/environment/components.tf",
            environment_components(&components),
        ),
        File::new("terraform/environment/versions.tf", versions("environment")),
        File::new("terraform/README.md", README),
    ];
    for component in &components {
        let root = format!("terraform/services/{}", component.name);
        files.push(File::new(
            format!("{root}/main.tf"),
            service_root(component),
        ));
        files.push(File::new(
            format!("{root}/variables.tf"),
            SERVICE_VARIABLES.to_owned(),
        ));
        files.push(File::new(
            format!("{root}/versions.tf"),
            versions(&format!("services/{}", component.name)),
        ));
    }
    files
}

/// `key = value` lines at `indent`, the `=` aligned as `terraform fmt` aligns a run.
fn attributes(indent: usize, pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let pad = " ".repeat(indent);
    pairs.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{pad}{k:width$} = {v}");
        out
    })
}

fn versions(state: &str) -> String {
    let mut out = header("#", "terraform.rs");
    let _ = write!(
        out,
        "terraform {{
  required_version = \">= 1.6\"

  required_providers {{
    aws = {{
      source  = \"hashicorp/aws\"
      version = \"~> 5.0\"
    }}
  }}

  # Its own state. bucket, region and the lock come from -backend-config
  # (deploy/terraform/README.md).
  backend \"s3\" {{
    key = \"bazaar/{state}.tfstate\"
  }}
}}
"
    );
    out
}

const SERVICE_VARIABLES: &str =
    "# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/terraform.rs and render again.
variable \"region\" {
  description = \"The AWS region of the environment.\"
  type        = string
}

variable \"state_bucket\" {
  description = \"The S3 bucket holding the Terraform states (the environment's among them).\"
  type        = string
}

variable \"image\" {
  description = \"The bazaar image, pinned by digest (<registry>/bazaar@sha256:...).\"
  type        = string
}
";

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

fn service_root(component: &Component) -> String {
    let name = component.name;
    let gateway = component.is_gateway();
    let mut out = header("#", "terraform.rs");
    let _ = write!(
        out,
        "#
# {name} on ECS Fargate, from modules/service, reading the environment root's outputs.
#
#   terraform init -backend-config=../../backend.hcl && terraform apply

provider \"aws\" {{
  region = var.region
}}

data \"terraform_remote_state\" \"environment\" {{
  backend = \"s3\"

  config = {{
    bucket = var.state_bucket
    key    = \"bazaar/environment.tfstate\"
    region = var.region
  }}
}}

locals {{
  environment = data.terraform_remote_state.environment.outputs
}}

module \"service\" {{
  source = \"../../modules/service\"

"
    );
    let mut pairs = vec![
        ("name", quoted(name)),
        ("image", "var.image".to_owned()),
        (
            "command",
            format!("[\"serve\", \"--only\", {}]", quoted(name)),
        ),
        ("cluster_arn", "local.environment.cluster_arn".to_owned()),
        (
            "subnet_ids",
            "local.environment.private_subnet_ids".to_owned(),
        ),
        (
            "security_group_id",
            format!("local.environment.security_group_ids[{}]", quoted(name)),
        ),
        (
            "service_discovery_namespace_id",
            "local.environment.service_discovery_namespace_id".to_owned(),
        ),
        (
            "service_discovery_namespace_name",
            "local.environment.service_discovery_namespace_name".to_owned(),
        ),
        (
            "execution_role_arn",
            format!("local.environment.execution_role_arns[{}]", quoted(name)),
        ),
        (
            "task_role_arn",
            "local.environment.task_role_arn".to_owned(),
        ),
        ("kms_key_arn", "local.environment.kms_key_arn".to_owned()),
    ];
    if gateway {
        pairs.push((
            "target_group_arn",
            "local.environment.gateway_target_group_arn".to_owned(),
        ));
    }
    out.push_str(&attributes(2, &pairs));

    // Who may call it: the load balancer (the gateway) or the registry's callers.
    out.push_str("\n  caller_security_group_ids = {\n");
    let callers: Vec<(&str, String)> = if gateway {
        vec![(
            "load_balancer",
            "local.environment.load_balancer_security_group_id".to_owned(),
        )]
    } else {
        component
            .callers
            .iter()
            .map(|caller| {
                (
                    *caller,
                    format!("local.environment.security_group_ids[{}]", quoted(caller)),
                )
            })
            .collect()
    };
    out.push_str(&attributes(4, &callers));
    out.push_str("  }\n");

    let mut environment = vec![
        ("BAZAAR_HTTP_ADDR", quoted(&format!("0.0.0.0:{PORT}"))),
        ("BAZAAR_DATA_DIR", quoted(super::DATA_DIR)),
        ("BAZAAR_LOG_FORMAT", quoted("json")),
    ];
    if !gateway {
        environment.push(("BAZAAR_NATS_URL", "local.environment.nats_url".to_owned()));
        // The NATS this expects is a 3-node cluster: every stream on all three.
        environment.push(("BAZAAR_NATS_STREAM_REPLICAS", quoted("3")));
    }
    let peers: Vec<(String, String)> = component
        .calls
        .iter()
        .map(|m| {
            (
                format!("BAZAAR_PEER_{}", m.to_ascii_uppercase()),
                format!(
                    "\"http://{m}.${{local.environment.service_discovery_namespace_name}}:{PORT}\""
                ),
            )
        })
        .collect();
    environment.extend(peers.iter().map(|(k, v)| (k.as_str(), v.clone())));
    out.push_str("\n  environment = {\n");
    out.push_str(&attributes(4, &environment));
    out.push_str("  }\n");

    out.push_str("\n  secrets = {\n");
    out.push_str(&attributes(4, &secret_arns(&secrets(component))));
    out.push_str("  }\n");
    if !gateway {
        let _ = write!(
            out,
            "
  # The one-off migration task: the module's settings plus the administrator's URL.
  migration_execution_role_arn = local.environment.execution_role_arns[{}]
  migration_secrets = {{
",
            quoted(&format!("{name}-migrate"))
        );
        out.push_str(&attributes(4, &secret_arns(&migration_secrets(component))));
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

/// The administrator's database URL (a role that may create roles): the migration
/// tasks' alone.
const ADMIN_URL_SECRET: &str = "database-admin-url";

/// The secrets a component's tasks read, as (variable, secret name): a module's own
/// database URL (its own role, ADR 0008), never another's nor the administrator's.
fn secrets(component: &Component) -> Vec<(&'static str, String)> {
    let mut secrets = Vec::new();
    if !component.is_gateway() {
        secrets.push(("BAZAAR_DATABASE_URL", component.database_url_secret()));
    }
    if holds_jwt_secret(component.name) {
        secrets.push(("BAZAAR_JWT_SECRET", "jwt-secret".to_owned()));
    }
    secrets.push(("BAZAAR_SERVICE_SECRET", "service-secret".to_owned()));
    secrets.push(("BAZAAR_METRICS_TOKEN", "metrics-token".to_owned()));
    secrets
}

/// A module's migration task's: its tasks' and the administrator's URL.
fn migration_secrets(component: &Component) -> Vec<(&'static str, String)> {
    let mut secrets = secrets(component);
    secrets.push(("BAZAAR_DATABASE_ADMIN_URL", ADMIN_URL_SECRET.to_owned()));
    secrets
}

fn secret_arns(secrets: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    secrets
        .iter()
        .map(|(var, key)| {
            (
                *var,
                format!("local.environment.secret_arns[{}]", quoted(key)),
            )
        })
        .collect()
}

/// `name = ["a", "b"]` lines: the secret names each component's role may read.
fn secret_lists<'a>(
    components: impl Iterator<Item = &'a Component>,
    secrets: fn(&Component) -> Vec<(&'static str, String)>,
) -> String {
    let lists: Vec<(&str, String)> = components
        .map(|c| {
            let names: Vec<String> = secrets(c).iter().map(|(_, key)| quoted(key)).collect();
            (c.name, format!("[{}]", names.join(", ")))
        })
        .collect();
    attributes(4, &lists)
}

/// The environment's list of components: one security group each, so any root can
/// name its callers' groups before those roots are applied; and the secrets each
/// component's execution role, and each module's migration task's, may read.
fn environment_components(components: &[Component]) -> String {
    let names: Vec<String> = components.iter().map(|c| quoted(c.name)).collect();
    let mut out = header("#", "terraform.rs");
    let _ = write!(
        out,
        "#
# The gateway and the modules of the registry: each gets a security group here, and a
# root of its own under services/.
locals {{
  components = [{}]

  # The Secrets Manager secrets (bazaar/<name>) each component's tasks read: its
  # execution role may read these and no other. A module reads its own database URL
  # (its own PostgreSQL role, ADR 0008).
  component_secrets = {{
{}  }}

  # Each module's one-off migration task: the module's secrets plus the
  # administrator's database URL, which nothing else may read.
  migration_secrets = {{
{}  }}
}}
",
        names.join(", "),
        secret_lists(components.iter(), secrets),
        secret_lists(
            components.iter().filter(|c| !c.is_gateway()),
            migration_secrets
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_modules_migration_task_reads_the_administrators_url() {
        for component in components(&crate::registry()) {
            let own = secrets(&component);
            assert!(own.iter().all(|(_, key)| key != ADMIN_URL_SECRET));
            let urls: Vec<&str> = own
                .iter()
                .filter(|(var, _)| *var == "BAZAAR_DATABASE_URL")
                .map(|(_, key)| key.as_str())
                .collect();
            if component.is_gateway() {
                assert!(urls.is_empty());
                continue;
            }
            assert_eq!(urls, [format!("database-url-{}", component.name)]);
            let migration = migration_secrets(&component);
            assert!(
                migration.iter().any(
                    |(var, key)| *var == "BAZAAR_DATABASE_ADMIN_URL" && key == ADMIN_URL_SECRET
                )
            );
            let root = service_root(&component);
            assert!(root.contains(&format!("execution_role_arns[\"{}\"]", component.name)));
            assert!(root.contains(&format!(
                "execution_role_arns[\"{}-migrate\"]",
                component.name
            )));
        }
    }
}
