//! Compose (`deploy/compose/compose.yaml`): bazaar on one machine with Docker or
//! Podman. Profile `monolith`: one bazaar process and PostgreSQL. Profile `split`: the
//! gateway and one service per module, PostgreSQL and NATS JetStream. Each service
//! waits for what it needs to be healthy: the stores, the bus and the modules it calls
//! (registry order is build order, so this never loops).
//!
//! A role per module in the split (ADR 0008): each module reads its own secret TOML
//! file, whose `database_url` is its own role's; a one-shot `migrate-<module>` service
//! before it (the image has no shell, and `bazaar migrate` provisions one module's
//! role per run) alone also holds the administrator's `database_admin_url`, as the
//! Kubernetes overlay's init container does.

use std::fmt::Write as _;

use chassis::module::Registry;

use super::{Component, DATA_DIR, File, IMAGE, PORT, components, header};
use crate::topology::holds_jwt_secret;

/// The monolith's secret settings (a TOML file read with `--config`: the secret keys,
/// never in the environment). One process, so one role: the database's owner.
const MONOLITH_SECRET: &str = "bazaar_config";
const POSTGRES_IMAGE: &str = "docker.io/library/postgres:17-alpine";
const NATS_IMAGE: &str = "docker.io/library/nats:2.12-alpine";
/// The database's owner (the image's `POSTGRES_USER`, a superuser): the monolith's
/// role, and the administrator that the split's migration steps provision roles as.
const POSTGRES_USER: &str = "bazaar";

/// The Compose secret holding a split component's settings (`bazaar_<name>`), and its
/// file under `secrets/`.
fn split_secret(name: &str) -> (String, String) {
    (format!("bazaar_{name}"), format!("./secrets/{name}.toml"))
}

/// The same for a module's migration step (`migrate-<module>.toml`): the module's
/// settings plus `database_admin_url`.
fn migrate_secret(name: &str) -> (String, String) {
    (
        format!("bazaar_migrate_{name}"),
        format!("./secrets/migrate-{name}.toml"),
    )
}

pub(super) fn render(registry: &Registry) -> Vec<File> {
    vec![
        File::new("compose/compose.yaml", compose(registry)),
        File::new("compose/nats.conf", NATS_CONF),
        File::new("compose/README.md", readme(&components(registry))),
    ]
}

/// JetStream on file storage, each write synced before it is acknowledged (DESIGN:
/// Jepsen found acknowledged writes lost under the default periodic fsync).
const NATS_CONF: &str =
    "# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/compose.rs and render again.
#
# NATS for bazaar's split topology under Compose: JetStream on file storage, every
# write synced to disk before it is acknowledged.
server_name: bazaar-nats
listen: 0.0.0.0:4222
http: 0.0.0.0:8222

jetstream {
  store_dir: /data
  sync_interval: always
}
";

fn compose(registry: &Registry) -> String {
    let components = components(registry);
    let mut out = header("#", "compose.rs");
    out.push_str(
        "#
# bazaar on one machine (Docker or Podman Compose), run from this directory:
#
#   docker compose --profile monolith up -d   every module in one process
#   docker compose --profile split up -d      the gateway and one process per module
#
# Either way the API is at http://127.0.0.1:8080 and the data lives in PostgreSQL
# (plus NATS JetStream for the split). Run one profile at a time: both publish 8080.
# In the split each module connects as its own PostgreSQL role, which its one-shot
# migrate-<module> service creates first (ADR 0008).
# Before the first start: build the image (deploy/container/Dockerfile, tagged
# bazaar:latest) and create the secret files (README.md next to this file).
name: bazaar

services:
",
    );
    let _ = write!(
        out,
        "  postgres:
    image: {POSTGRES_IMAGE}
    profiles: [monolith, split]
    environment:
      POSTGRES_USER: {POSTGRES_USER}
      POSTGRES_DB: bazaar
      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password
    secrets: [postgres_password]
    volumes:
      - postgres:/var/lib/postgresql/data
    healthcheck:
      test: [\"CMD\", \"pg_isready\", \"-U\", \"{POSTGRES_USER}\", \"-d\", \"bazaar\"]
{HEALTH_TIMING}    restart: unless-stopped

  nats:
    image: {NATS_IMAGE}
    profiles: [split]
    command: [\"nats-server\", \"--config\", \"/etc/nats/bazaar.conf\"]
    configs:
      - source: nats
        target: /etc/nats/bazaar.conf
    volumes:
      - nats:/data
    healthcheck:
      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8222/healthz?js-enabled-only=true\"]
{HEALTH_TIMING}    restart: unless-stopped
"
    );
    out.push_str(&server(
        &Container {
            name: "bazaar",
            profile: "monolith",
            secret: MONOLITH_SECRET,
            volume: "bazaar",
            args: &["serve"],
            env: &[],
        },
        &[("postgres", HEALTHY)],
        true,
    ));
    for component in &components {
        out.push_str(&split_service(component));
    }
    let _ = write!(
        out,
        "
secrets:
  # The monolith's secret settings as TOML (database_url, jwt_secret,
  # metrics_token), read with --config.
  {MONOLITH_SECRET}:
    file: ./secrets/bazaar.toml
  postgres_password:
    file: ./secrets/postgres-password
  # The split: each component's own settings (a module's database_url is its own
  # role's; the gateway has none), and each module's migration step's (the same,
  # plus the owner's database_admin_url).
"
    );
    for component in &components {
        let mut secrets = vec![split_secret(component.name)];
        if !component.is_gateway() {
            secrets.push(migrate_secret(component.name));
        }
        for (secret, file) in secrets {
            let _ = writeln!(out, "  {secret}:\n    file: {file}");
        }
    }
    out.push_str(
        "
configs:
  nats:
    file: ./nats.conf

volumes:
  postgres: {}
  nats: {}
  data-bazaar: {}
",
    );
    for component in &components {
        let _ = writeln!(out, "  data-{}: {{}}", component.name);
    }
    out
}

const HEALTH_TIMING: &str = "      interval: 5s
      timeout: 3s
      retries: 5
      start_period: 60s
      start_interval: 1s
";

const HEALTHY: &str = "service_healthy";
/// A one-shot service (`restart: \"no\"`) that exited 0: a module's migration step.
const COMPLETED: &str = "service_completed_successfully";

fn split_service(component: &Component) -> String {
    let name = component.name;
    let mut env = Vec::new();
    if !component.is_gateway() {
        env.push(("BAZAAR_NATS_URL".to_owned(), "nats://nats:4222".to_owned()));
    }
    env.extend(component.peers());
    let (secret, _) = split_secret(name);
    let server_container = Container {
        name,
        profile: "split",
        secret: &secret,
        volume: name,
        args: &["serve", "--only", name],
        env: &env,
    };
    if component.is_gateway() {
        let needs: Vec<(&str, &str)> = component.calls.iter().map(|m| (*m, HEALTHY)).collect();
        return server(&server_container, &needs, true);
    }
    let migrate = format!("migrate-{name}");
    let mut needs = vec![
        ("postgres", HEALTHY),
        ("nats", HEALTHY),
        (migrate.as_str(), COMPLETED),
    ];
    needs.extend(component.calls.iter().map(|m| (*m, HEALTHY)));
    // `migrate` checks the settings as `serve --only` would (peers, NATS), and
    // connects to PostgreSQL alone.
    let mut migrate_env = vec![("BAZAAR_ONLY".to_owned(), name.to_owned())];
    migrate_env.extend(env.iter().cloned());
    let (migrate_secret, _) = migrate_secret(name);
    let mut out = container(&Container {
        name: &migrate,
        profile: "split",
        secret: &migrate_secret,
        volume: name,
        args: &["migrate"],
        env: &migrate_env,
    });
    out.push_str(&depends_on(&[("postgres", HEALTHY)]));
    out.push_str("    restart: \"no\"\n");
    out.push_str(&server(&server_container, &needs, false));
    out
}

/// One bazaar container: the image, its secret settings file (`--config`), the
/// root filesystem read-only, the data dir a volume.
struct Container<'a> {
    name: &'a str,
    profile: &'a str,
    /// The Compose secret read with `--config`.
    secret: &'a str,
    /// `data-<volume>`, mounted at the data dir.
    volume: &'a str,
    args: &'a [&'a str],
    env: &'a [(String, String)],
}

fn container(c: &Container<'_>) -> String {
    let secret = format!("/run/secrets/{}", c.secret);
    let command = ["--config", secret.as_str()]
        .iter()
        .chain(c.args)
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "
  {name}:
    image: {IMAGE}
    profiles: [{profile}]
    command: [{command}]
    environment:
",
        name = c.name,
        profile = c.profile,
    );
    if c.args.first() == Some(&"serve") {
        let _ = writeln!(out, "      BAZAAR_HTTP_ADDR: 0.0.0.0:{PORT}");
    }
    let _ = writeln!(out, "      BAZAAR_DATA_DIR: {DATA_DIR}");
    for (key, value) in c.env {
        let _ = writeln!(out, "      {key}: {value}");
    }
    let _ = write!(
        out,
        "    secrets: [{secret}]
    volumes:
      - data-{volume}:{DATA_DIR}
    read_only: true
    cap_drop: [ALL]
    security_opt: [\"no-new-privileges:true\"]
",
        secret = c.secret,
        volume = c.volume,
    );
    out
}

fn depends_on(needs: &[(&str, &str)]) -> String {
    if needs.is_empty() {
        return String::new();
    }
    let mut out = String::from("    depends_on:\n");
    for (need, condition) in needs {
        let _ = writeln!(out, "      {need}:\n        condition: {condition}");
    }
    out
}

/// A bazaar server: the image's own binary is its health check (the image has no
/// shell and no curl).
fn server(c: &Container<'_>, needs: &[(&str, &str)], published: bool) -> String {
    let mut out = container(c);
    if published {
        let _ = writeln!(out, "    ports:\n      - \"127.0.0.1:{PORT}:{PORT}\"");
    } else {
        let _ = writeln!(out, "    expose: [\"{PORT}\"]");
    }
    let _ = write!(
        out,
        "    healthcheck:
      test: [\"CMD\", \"/bazaar\", \"health\", \"--url\", \"http://127.0.0.1:{PORT}/health/ready\", \"--timeout-secs\", \"2\"]
{HEALTH_TIMING}"
    );
    out.push_str(&depends_on(needs));
    out.push_str("    restart: unless-stopped\n");
    out
}

fn readme(components: &[Component]) -> String {
    let mut out = String::from(
        "<!-- Rendered by `bazaar deploy render` from the module registry: do not edit.
     Change crates/bazaar/src/deploy/compose.rs and render again. -->
",
    );
    out.push_str(
        "
# bazaar with Compose

`compose.yaml` runs bazaar on one machine, from this directory:

```sh
docker compose --profile monolith up -d   # every module in one process
docker compose --profile split up -d      # the gateway and one process per module
curl -s http://127.0.0.1:8080/health/ready
```

Both profiles keep their data in PostgreSQL; the split adds NATS JetStream (file
storage, `sync_interval: always`, configured by `nats.conf`). Each service starts once
what it needs is healthy: PostgreSQL, NATS and the modules it calls; the gateway last.
The bazaar services check themselves with the image's own binary (`/bazaar health`),
since the image has no shell.

## PostgreSQL roles

- **split**: a role per module (ADR 0008). Each module connects as `bazaar_<module>`,
  which owns its schema and cannot read or write another module's. Before a module
  starts, its one-shot `migrate-<module>` service (`bazaar migrate`, `restart: \"no\"`;
  the module waits for it with `condition: service_completed_successfully`) connects
  as the database's owner (`database_admin_url`), creates or updates the module's
  role with the password of the module's URL, hands it the module's schema and
  migrates it. Only the migration steps hold the owner's URL; the servers hold their
  own role's. One migration service per module: the image has no shell, and one
  `bazaar migrate` provisions one module's role.
- **monolith**: one process holding every module, so one role: the owner's URL in
  `bazaar.toml`. The schemas still keep the modules apart (`search_path`), but not as
  a security boundary (docs/operations.md, PostgreSQL).

## Before the first start

1. Build the image as `bazaar:latest` from the repository root with
   `deploy/container/Dockerfile`.
2. Create the secret files Compose mounts (`secrets/` is git-ignored). bazaar reads
   its secret settings from the TOML file given with `--config`; nothing secret is in
   the environment. Each process gets only the secrets it needs: the JWT secret only
   the gateway and identity (and the monolith), a module's database password only that
   module and its migration step, the owner's password only PostgreSQL, the monolith
   and the migration steps.

```sh
mkdir -p secrets && cd secrets
secret() { head -c 48 /dev/urandom | base64 | tr -d '/+=\\n'; }
owner=$(secret)   # the password of the database's owner, bazaar (a superuser)
printf '%s' \"$owner\" > postgres-password
jwt=\"jwt_secret = \\\"$(secret)\\\"\"
service=\"service_secret = \\\"$(secret)\\\"\"
metrics=\"metrics_token = \\\"$(secret)\\\"\"
# The monolith: one process, one role (the owner).
printf '%s\\n' \"database_url = \\\"postgres://bazaar:$owner@postgres:5432/bazaar\\\"\" \\
  \"$jwt\" \"$metrics\" > bazaar.toml
# The split: the gateway has no database URL.
printf '%s\\n' \"$jwt\" \"$service\" \"$metrics\" > gateway.toml
# A module: its own role and a password of its own, then the other secrets it needs;
# its migration step: the same plus the owner's URL.
module() {
  printf '%s\\n' \"database_url = \\\"postgres://bazaar_$1:$(secret)@postgres:5432/bazaar\\\"\" \\
    \"$service\" \"$metrics\" \"${2:-}\" > \"$1.toml\"
  { cat \"$1.toml\"
    printf '%s\\n' \"database_admin_url = \\\"postgres://bazaar:$owner@postgres:5432/bazaar\\\"\"
  } > \"migrate-$1.toml\"
}
",
    );
    for component in components.iter().filter(|c| !c.is_gateway()) {
        let _ = writeln!(
            out,
            "module {}{}",
            component.name,
            if holds_jwt_secret(component.name) {
                " \"$jwt\""
            } else {
                ""
            }
        );
    }
    out.push_str(
        "# Compose (without Swarm) bind-mounts secret files as they are: the containers' users
# (bazaar: 65532; postgres, 70) must be able to read them. That makes them readable
# by every user of this machine, the owner's URL in each migrate-*.toml included: keep
# the directory on a host only operators log in to (0700 on its parent), or use Swarm
# or Podman secrets, which are mounted per container.
chmod 0644 -- *
cd ..
```

Settings that are not secret go in the `environment` of `compose.yaml` (as
`BAZAAR_<KEY>`) or into the TOML files too. `compose.yaml`, this file and `nats.conf`
are rendered by `bazaar deploy render`: change `crates/bazaar/src/deploy/compose.rs`,
never these files.
",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service `name`'s block of the rendered compose.yaml.
    fn service<'a>(yaml: &'a str, name: &str) -> &'a str {
        let start = yaml
            .find(&format!("\n  {name}:\n"))
            .unwrap_or_else(|| panic!("no service {name}"));
        let rest = &yaml[start + 1..];
        let end = rest[1..].find("\n\n").map_or(rest.len(), |e| e + 1);
        &rest[..end]
    }

    #[test]
    fn a_module_has_its_own_secret_and_only_its_migration_step_the_administrators() {
        let registry = crate::registry();
        let yaml = compose(&registry);
        for component in components(&registry) {
            let name = component.name;
            let server = service(&yaml, name);
            assert!(
                server.contains(&format!("secrets: [bazaar_{name}]")),
                "{name}: {server}"
            );
            if component.is_gateway() {
                assert!(!yaml.contains("migrate-gateway"));
                continue;
            }
            assert!(
                server.contains(&format!(
                    "      migrate-{name}:\n        condition: service_completed_successfully"
                )),
                "{name} waits for its migration: {server}"
            );
            let migrate = service(&yaml, &format!("migrate-{name}"));
            assert!(migrate.contains(&format!("secrets: [bazaar_migrate_{name}]")));
            assert!(migrate.contains("\"migrate\"]"));
            assert!(migrate.contains(&format!("BAZAAR_ONLY: {name}")));
            assert!(migrate.contains("restart: \"no\""));
            assert!(!migrate.contains("healthcheck"));
            // Its secret is mounted by the migration step and nothing else.
            assert_eq!(
                yaml.matches(&format!("secrets: [bazaar_migrate_{name}]"))
                    .count(),
                1
            );
            assert!(yaml.contains(&format!(
                "  bazaar_migrate_{name}:\n    file: ./secrets/migrate-{name}.toml\n"
            )));
        }
        // The monolith: one process, one role.
        assert!(service(&yaml, "bazaar").contains("secrets: [bazaar_config]"));
    }

    #[test]
    fn the_readme_creates_every_secret_file_compose_mounts() {
        let registry = crate::registry();
        let components = components(&registry);
        let readme = readme(&components);
        for component in components.iter().filter(|c| !c.is_gateway()) {
            let call = format!("\nmodule {}", component.name);
            assert!(readme.contains(&call), "{call}");
        }
        assert!(readme.contains("> gateway.toml"));
        assert!(readme.contains("> bazaar.toml"));
        assert!(readme.contains("module identity \"$jwt\""));
        assert!(readme.contains("module catalog\n"));
    }
}
