//! The module registry is the one declaration of the modules: its routes, the
//! OpenAPI document and the router serving them must agree, in either topology.

use serde_json::Value;

use crate::helpers::spawn_app;

/// `prefix` owns `path` (the path is the prefix or below it).
fn owns(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[test]
fn the_declarations_add_up() {
    let registry = bazaar::registry();
    assert_eq!(registry.problems(), Vec::<String>::new());
    for module in registry.modules() {
        let Some(doc) = module.openapi.map(|document| document()) else {
            assert!(
                module.routes.is_empty(),
                "{} declares routes but no OpenAPI document",
                module.name
            );
            continue;
        };
        // No route without an owner: each path a module documents is under one of
        // its own prefixes ...
        for path in doc.paths.paths.keys() {
            assert!(
                module.routes.iter().any(|prefix| owns(prefix, path)),
                "{} documents {path} outside its prefixes {:?}",
                module.name,
                module.routes
            );
        }
        // ... and no owner without routes: each prefix it claims has paths.
        for prefix in module.routes {
            assert!(
                doc.paths.paths.keys().any(|path| owns(prefix, path)),
                "{} claims {prefix} but documents no path under it",
                module.name
            );
        }
    }
}

/// Every documented operation reaches a handler: whatever the answer (401 without a
/// token, 400 without a body, 404 for an unknown id), it is never the router's own
/// "no such route" or 405. In the split topology this goes through the gateway's
/// routing table, which the registry also derives.
#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json", None).await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, operations) in paths {
        // Path parameters get a value no resource has.
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "0190f2c4-0000-7000-8000-000000000000"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in operations.as_object().expect("operations").keys() {
            let Ok(method) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE" | "PATCH") {
                continue;
            }
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .send()
                .await
                .expect("answered");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {concrete}: {body}");
            assert!(
                !(status == 404 && body["detail"] == "no such route"),
                "{method} {concrete} reached no handler: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} operations checked");
}

/// The committed `deploy/` is exactly what `bazaar deploy render` writes (the same
/// check as CI's scripts/deploy-check.sh, without the binary): every rendered file
/// with the same contents, and no file there that is not rendered (git-ignored local
/// secrets aside). On a difference: `cargo run -p bazaar -- deploy render`.
#[test]
fn deploy_is_the_render_output() {
    let repository = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let root = repository.join("deploy");
    let crates = bazaar::deploy::CrateGraph::load(repository).unwrap();
    let files = bazaar::deploy::render(&bazaar::registry(), &crates);
    for file in &files {
        let committed = std::fs::read_to_string(root.join(&file.path)).unwrap_or_default();
        assert!(
            committed == file.contents,
            "deploy/{} differs from its rendering: run `cargo run -p bazaar -- deploy render`",
            file.path
        );
    }
    let mut on_disk = Vec::new();
    let mut dirs = vec![root.clone(), repository.join(".github/workflows")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Relative to deploy/, as rendered (the workflows are `../.github/...`).
            let relative = match path.strip_prefix(&root) {
                Ok(inside) => inside.to_string_lossy().replace('\\', "/"),
                Err(_) => format!(
                    "../{}",
                    path.strip_prefix(repository)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/")
                ),
            };
            if IGNORED.contains(&relative.as_str()) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                on_disk.push(relative);
            }
        }
    }
    let stale: Vec<&String> = on_disk
        .iter()
        .filter(|p| !files.iter().any(|f| &f.path == *p))
        .collect();
    assert!(stale.is_empty(), "not rendered, remove them: {stale:?}");
}

/// Local files under deploy/ that git ignores (.gitignore): never rendered.
const IGNORED: &[&str] = &["prometheus/bazaar-metrics-token", "compose/secrets"];
