//! GitHub Actions (`.github/workflows/`, beside `deploy/`: the one rendered path
//! outside it): one workflow per component (the gateway and each module) that runs
//! when a crate it depends on changes (its crate's local dependencies, transitively,
//! from `cargo metadata --offline`), tests and lints that crate and builds the image;
//! and the whole-repository workflow running `.ci/run`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use chassis::module::Registry;

use super::{File, components};

/// Workflows land at `<out>/../.github/workflows`: `<out>` is the repository's
/// `deploy/`.
pub(crate) const DIR: &str = "../.github/workflows";

/// The workspace's crates, each with its directory and its local dependencies.
#[derive(Debug, Clone, Default)]
pub struct CrateGraph {
    crates: BTreeMap<String, (String, Vec<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CrateGraphError {
    #[error("cannot run `cargo metadata --offline`")]
    Run(#[source] std::io::Error),
    #[error("`cargo metadata --offline` failed: {0}")]
    Failed(String),
    #[error("cannot read `cargo metadata`'s output")]
    Parse(#[source] serde_json::Error),
}

impl CrateGraph {
    /// `cargo metadata --offline --no-deps` of the workspace at `root` (cargo as
    /// `$CARGO` when cargo runs us, else from the PATH).
    pub fn load(root: &Path) -> Result<Self, CrateGraphError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = std::process::Command::new(cargo)
            .args([
                "metadata",
                "--offline",
                "--no-deps",
                "--format-version",
                "1",
            ])
            .current_dir(root)
            .output()
            .map_err(CrateGraphError::Run)?;
        if !output.status.success() {
            return Err(CrateGraphError::Failed(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        let metadata = serde_json::from_slice(&output.stdout).map_err(CrateGraphError::Parse)?;
        Ok(Self::from_metadata(&metadata))
    }

    fn from_metadata(metadata: &serde_json::Value) -> Self {
        let root = metadata["workspace_root"].as_str().unwrap_or_default();
        let mut crates = BTreeMap::new();
        for package in metadata["packages"].as_array().into_iter().flatten() {
            let (Some(name), Some(manifest)) =
                (package["name"].as_str(), package["manifest_path"].as_str())
            else {
                continue;
            };
            let dir = Path::new(manifest)
                .parent()
                .and_then(|d| d.strip_prefix(root).ok())
                .map(|d| d.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let local: BTreeSet<String> = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d.get("path").is_some())
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect();
            crates.insert(name.to_owned(), (dir, local.into_iter().collect()));
        }
        Self { crates }
    }

    /// `name` and every local crate it depends on, transitively (dev-dependencies
    /// included: its tests use them).
    fn closure(&self, name: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut next = vec![name];
        while let Some(crate_name) = next.pop() {
            if let Some((key, (_, deps))) = self.crates.get_key_value(crate_name) {
                if seen.insert(key.as_str()) {
                    next.extend(deps.iter().map(String::as_str));
                }
            }
        }
        seen
    }

    fn dir(&self, name: &str) -> Option<&str> {
        self.crates.get(name).map(|(dir, _)| dir.as_str())
    }
}

pub(super) fn render(registry: &Registry, graph: &CrateGraph) -> Vec<File> {
    let mut files = vec![File::new(format!("{DIR}/ci.yml"), CI)];
    for component in components(registry) {
        files.push(File::new(
            format!("{DIR}/{}.yml", component.name),
            component_workflow(component.name, graph),
        ));
    }
    files
}

const HEADER: &str = "# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/workflows.rs and render again.
";

const CI: &str = "# Rendered by `bazaar deploy render` from the module registry: do not edit.
# Change crates/bazaar/src/deploy/workflows.rs and render again.
#
# The whole repository: everything .ci/run checks (fmt, crate rules, cargo deny,
# promtool, clippy, the deployment files, every test on SQLite, PostgreSQL and the
# split topology, schemathesis).
name: ci

on:
  push:
    branches: [main]
  pull_request:

permissions:
  contents: read

concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true

jobs:
  ci:
    runs-on: ubuntu-24.04
    timeout-minutes: 60
    services:
      postgres:
        image: postgres:17
        env:
          POSTGRES_HOST_AUTH_METHOD: trust
          POSTGRES_DB: test
        ports: [\"5432:5432\"]
    steps:
      - uses: actions/checkout@v4
      # A service container cannot be given arguments, and NATS needs -js.
      - name: NATS with JetStream
        run: docker run -d --name nats -p 4222:4222 nats:2.12 -js
      - name: .ci/run
        env:
          CI: \"true\"
        run: bash .ci/run
";

fn component_workflow(name: &str, graph: &CrateGraph) -> String {
    let mut paths: Vec<String> = graph
        .closure(name)
        .into_iter()
        .filter_map(|c| graph.dir(c))
        .map(|dir| format!("{dir}/**"))
        .collect();
    paths.extend(["Cargo.toml", "Cargo.lock", "deploy/container/**"].map(str::to_owned));
    paths.push(format!(".github/workflows/{name}.yml"));
    let paths = paths.iter().fold(String::new(), |mut out, p| {
        let _ = writeln!(out, "      - \"{p}\"");
        out
    });
    format!(
        "{HEADER}#
# {name}: tests and lints its crate when a crate it depends on changes, then builds
# the image (one image runs every component: `bazaar serve --only {name}`).
name: {name}

on:
  push:
    branches: [main]
    paths:
{paths}  pull_request:
    paths:
{paths}
permissions:
  contents: read

concurrency:
  group: {name}-${{{{ github.ref }}}}
  cancel-in-progress: true

jobs:
  test:
    runs-on: ubuntu-24.04
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
      - name: cargo clippy -p {name}
        run: cargo clippy --locked -p {name} --all-targets -- -D warnings
      - name: cargo test -p {name}
        run: cargo test --locked -p {name}

  image:
    needs: test
    runs-on: ubuntu-24.04
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
      - name: build the image
        run: docker build -f deploy/container/Dockerfile -t bazaar:${{{{ github.sha }}}} .
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_workflow_watches_its_crates_and_no_other_module() {
        let metadata = serde_json::json!({
            "workspace_root": "/r",
            "packages": [
                {"name": "orders", "manifest_path": "/r/crates/orders/Cargo.toml",
                 "dependencies": [{"name": "chassis", "path": "/r/crates/chassis"}, {"name": "serde"}]},
                {"name": "chassis", "manifest_path": "/r/crates/chassis/Cargo.toml",
                 "dependencies": [{"name": "chassis-core", "path": "/r/crates/chassis-core"}]},
                {"name": "chassis-core", "manifest_path": "/r/crates/chassis-core/Cargo.toml", "dependencies": []},
                {"name": "payments", "manifest_path": "/r/crates/payments/Cargo.toml", "dependencies": []},
            ]
        });
        let graph = CrateGraph::from_metadata(&metadata);
        let workflow = component_workflow("orders", &graph);
        for dir in [
            "crates/orders/**",
            "crates/chassis/**",
            "crates/chassis-core/**",
        ] {
            assert!(workflow.contains(&format!("\"{dir}\"")), "{dir}");
        }
        assert!(!workflow.contains("crates/payments"));
        assert!(!workflow.contains("serde"));
    }
}
