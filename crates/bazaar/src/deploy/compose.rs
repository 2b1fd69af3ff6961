//! Compose (`deploy/compose/compose.yaml`): bazaar on one machine with Docker or
//! Podman. Profile `monolith`: one bazaar process and PostgreSQL. Profile `split`: the
//! gateway and one service per module, PostgreSQL and NATS JetStream. Each service
//! waits for what it needs to be healthy: the stores, the bus and the modules it calls
//! (registry order is build order, so this never loops).

use std::fmt::Write as _;

use chassis::module::Registry;

use super::{Component, DATA_DIR, File, IMAGE, PORT, components, header};

/// Where Compose mounts the secret holding bazaar's secret settings (a TOML file read
/// with `--config`: the secret keys, never in the environment).
const CONFIG_SECRET: &str = "bazaar_config";
const POSTGRES_IMAGE: &str = "docker.io/library/postgres:17-alpine";
const NATS_IMAGE: &str = "docker.io/library/nats:2.12-alpine";

pub(super) fn render(registry: &Registry) -> Vec<File> {
    vec![
        File::new("compose/compose.yaml", compose(registry)),
        File::new("compose/nats.conf", NATS_CONF),
        File::new("compose/README.md", readme()),
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
# Before the first start: build the image (deploy/container/Dockerfile, tagged
# bazaar:latest) and create the two secret files (README.md next to this file).
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
      POSTGRES_USER: bazaar
      POSTGRES_DB: bazaar
      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password
    secrets: [postgres_password]
    volumes:
      - postgres:/var/lib/postgresql/data
    healthcheck:
      test: [\"CMD\", \"pg_isready\", \"-U\", \"bazaar\", \"-d\", \"bazaar\"]
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
    out.push_str(&bazaar_service(
        "bazaar",
        "monolith",
        &["serve"],
        &[],
        &["postgres"],
        true,
    ));
    for component in &components {
        out.push_str(&split_service(component));
    }
    let _ = write!(
        out,
        "
secrets:
  # bazaar's secret settings as TOML (database_url, jwt_secret, service_secret,
  # metrics_token), read with --config.
  {CONFIG_SECRET}:
    file: ./secrets/bazaar.toml
  postgres_password:
    file: ./secrets/postgres-password

configs:
  nats:
    file: ./nats.conf

volumes:
  postgres: {{}}
  nats: {{}}
  data-bazaar: {{}}
"
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

fn split_service(component: &Component) -> String {
    let mut env = Vec::new();
    if !component.is_gateway() {
        env.push(("BAZAAR_NATS_URL".to_owned(), "nats://nats:4222".to_owned()));
    }
    env.extend(component.peers());
    let mut needs: Vec<&str> = if component.is_gateway() {
        Vec::new()
    } else {
        vec!["postgres", "nats"]
    };
    needs.extend(component.calls.iter().copied());
    bazaar_service(
        component.name,
        "split",
        &["serve", "--only", component.name],
        &env,
        &needs,
        component.is_gateway(),
    )
}

/// One bazaar process: the image's own binary is its health check (the image has no
/// shell and no curl), the root filesystem read-only, the data dir a volume.
fn bazaar_service(
    name: &str,
    profile: &str,
    args: &[&str],
    env: &[(String, String)],
    needs: &[&str],
    published: bool,
) -> String {
    let secret = format!("/run/secrets/{CONFIG_SECRET}");
    let command = ["--config", secret.as_str()]
        .iter()
        .chain(args)
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
      BAZAAR_HTTP_ADDR: 0.0.0.0:{PORT}
      BAZAAR_DATA_DIR: {DATA_DIR}
"
    );
    for (key, value) in env {
        let _ = writeln!(out, "      {key}: {value}");
    }
    let _ = write!(
        out,
        "    secrets: [{CONFIG_SECRET}]
    volumes:
      - data-{name}:{DATA_DIR}
    read_only: true
    cap_drop: [ALL]
    security_opt: [\"no-new-privileges:true\"]
"
    );
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
    if !needs.is_empty() {
        out.push_str("    depends_on:\n");
        for need in needs {
            let _ = writeln!(out, "      {need}:\n        condition: service_healthy");
        }
    }
    out.push_str("    restart: unless-stopped\n");
    out
}

fn readme() -> String {
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

## Before the first start

1. Build the image as `bazaar:latest` from the repository root with
   `deploy/container/Dockerfile`.
2. Create the two secret files Compose mounts (`secrets/` is git-ignored). bazaar reads
   its secret settings from `secrets/bazaar.toml` (`--config`); nothing secret is in
   the environment:

```sh
mkdir -p secrets
password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s' \"$password\" > secrets/postgres-password
cat > secrets/bazaar.toml <<EOF
database_url = \"postgres://bazaar:$password@postgres:5432/bazaar\"
jwt_secret = \"$(head -c 48 /dev/urandom | base64)\"
service_secret = \"$(head -c 48 /dev/urandom | base64)\"
metrics_token = \"$(head -c 48 /dev/urandom | base64)\"
EOF
# Compose (without Swarm) bind-mounts secret files as they are: the containers' users
# (bazaar: 65532; postgres, 70) must be able to read them.
chmod 0644 secrets/postgres-password secrets/bazaar.toml
```

Settings that are not secret go in the `environment` of `compose.yaml` (as
`BAZAAR_<KEY>`) or into `bazaar.toml` too. `compose.yaml`, this file and `nats.conf`
are rendered by `bazaar deploy render`: change `crates/bazaar/src/deploy/compose.rs`,
never these files.
",
    );
    out
}
