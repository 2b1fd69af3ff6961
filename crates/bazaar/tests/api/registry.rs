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

/// The Prometheus files name exactly the registry's modules: the split job's targets
/// in `bazaar dev --split`'s port order (the gateway's port, then one each in
/// registry order), and the Kubernetes job's service regex.
#[test]
fn deploy_files_name_every_module() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    let names = bazaar::registry().names();
    let local = std::fs::read_to_string(format!("{root}/prometheus.yml")).unwrap();
    let mut expected = String::from(
        "      - targets: [\"127.0.0.1:8080\"]\n        labels: {topology: split, component: gateway}\n",
    );
    for (module, port) in names.iter().zip(8081..) {
        use std::fmt::Write as _;
        let _ = write!(
            expected,
            "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{topology: split, component: {module}}}\n"
        );
    }
    assert!(
        local.contains(&expected),
        "prometheus.yml's split job should list, in this order:\n{expected}"
    );
    let kubernetes = std::fs::read_to_string(format!("{root}/prometheus-kubernetes.yml")).unwrap();
    let regex = format!("regex: bazaar|gateway|{}\n", names.join("|"));
    assert!(
        kubernetes.contains(&regex),
        "prometheus-kubernetes.yml should keep `{regex}`"
    );
}
