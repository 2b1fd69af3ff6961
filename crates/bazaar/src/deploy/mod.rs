//! `bazaar deploy render`: every deployment file derived from the module registry, so
//! adding a module adds its services, scrape targets and network rules without anyone
//! editing YAML. The output is deterministic (sorted, no timestamps): the committed
//! `deploy/` is exactly what this writes, and CI renders again and fails on drift.
//!
//! One file per target: [`container`] (the image, from templates), [`compose`],
//! [`kubernetes`], [`terraform`] (ECS Fargate), [`workflows`] (GitHub Actions, the one
//! path outside `deploy/`),
//! [`prometheus`] (scrape targets; rules and the Grafana dashboard are hand-written and
//! copied verbatim, so `deploy/` holds nothing else).

use std::path::{Path, PathBuf};

use chassis::module::Registry;

use crate::topology::GATEWAY;

mod compose;
mod container;
mod kubernetes;
mod prometheus;
mod terraform;
mod workflows;

pub use workflows::{CrateGraph, CrateGraphError};

/// The port every bazaar process listens on inside its container (the image's
/// convention, `BAZAAR_HTTP_ADDR=0.0.0.0:8080`); peers are `http://<name>:8080`.
pub(crate) const PORT: u16 = 8080;
/// The image the container target builds and every other target runs.
pub(crate) const IMAGE: &str = "bazaar:latest";
/// Where the image keeps `BAZAAR_DATA_DIR` (a volume: the root filesystem is read-only).
pub(crate) const DATA_DIR: &str = "/data";
/// The numeric non-root user the image runs as.
pub(crate) const USER_ID: u32 = 65532;

/// The first line of every rendered file that takes comments.
pub(crate) fn header(comment: &str, source: &str) -> String {
    format!(
        "{comment} Rendered by `bazaar deploy render` from the module registry: do not edit.\n\
         {comment} Change crates/bazaar/src/deploy/{source} and render again.\n"
    )
}

/// One rendered file, its path relative to the output directory (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub contents: String,
}

impl File {
    pub(crate) fn new(path: impl Into<String>, contents: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
        }
    }
}

/// One process of the split topology: the gateway or a module, with whom it talks to.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    pub(crate) name: &'static str,
    /// The modules it calls (the gateway: every module).
    pub(crate) calls: Vec<&'static str>,
    /// Who calls it: the gateway, then the modules whose contracts call it.
    pub(crate) callers: Vec<&'static str>,
}

impl Component {
    pub(crate) fn is_gateway(&self) -> bool {
        self.name == GATEWAY
    }

    /// The name of the secret (Kubernetes: the key) holding this module's own
    /// database URL, as its role; the administrator's is `database-url`.
    pub(crate) fn database_url_secret(&self) -> String {
        format!("database-url-{}", self.name)
    }

    /// `BAZAAR_PEER_<MODULE>` and the URL of each module it calls.
    pub(crate) fn peers(&self) -> Vec<(String, String)> {
        self.calls
            .iter()
            .map(|m| {
                (
                    format!("BAZAAR_PEER_{}", m.to_ascii_uppercase()),
                    format!("http://{m}:{PORT}"),
                )
            })
            .collect()
    }
}

/// The gateway first, then the modules in registry (build) order: a module comes after
/// those it calls.
pub(crate) fn components(registry: &Registry) -> Vec<Component> {
    let gateway = Component {
        name: GATEWAY,
        calls: registry.names(),
        callers: Vec::new(),
    };
    let modules = registry.names().into_iter().map(|name| Component {
        name,
        calls: registry.calls(name).to_vec(),
        callers: std::iter::once(GATEWAY)
            .chain(registry.callers(name))
            .collect(),
    });
    std::iter::once(gateway).chain(modules).collect()
}

/// Everything `bazaar deploy render` writes, sorted by path: under `deploy/`, and the
/// workflows at `../.github/workflows/` (the workspace's `crates` say which crates
/// each component's workflow watches).
pub fn render(registry: &Registry, crates: &CrateGraph) -> Vec<File> {
    let mut files = Vec::new();
    files.extend(container::render());
    files.extend(compose::render(registry));
    files.extend(kubernetes::render(registry));
    files.extend(prometheus::render(registry));
    files.extend(terraform::render(registry));
    files.extend(workflows::render(registry, crates));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {}", path.display())]
pub struct WriteError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes `files` under `out`, creating directories; files already there and not
/// rendered are left alone (the drift check reports them).
pub fn write(files: &[File], out: &Path) -> Result<(), WriteError> {
    for file in files {
        let path = out.join(&file.path);
        let written = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(&path, &file.contents));
        written.map_err(|source| WriteError { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_follow_the_call_graph() {
        let components = components(&crate::registry());
        assert_eq!(components[0].name, GATEWAY);
        assert_eq!(components.len(), crate::registry().names().len() + 1);
        let payments = components.iter().find(|c| c.name == "payments").unwrap();
        assert_eq!(payments.callers, [GATEWAY, "orders"]);
        let orders = components.iter().find(|c| c.name == "orders").unwrap();
        assert!(orders.calls.contains(&"payments"));
        assert!(
            orders
                .peers()
                .contains(&("BAZAAR_PEER_PAYMENTS".into(), "http://payments:8080".into()))
        );
    }

    #[test]
    fn render_is_sorted_and_has_no_duplicates() {
        let files = render(&crate::registry(), &CrateGraph::default());
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(paths, sorted);
    }
}
