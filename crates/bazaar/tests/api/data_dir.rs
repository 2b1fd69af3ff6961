//! The data dir holds password hashes, addresses and sent mail: the monolith keeps
//! it owner-only (0700, files 0600) whatever the umask, and tightens one an older
//! version left readable by others.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bazaar::Application;

use crate::helpers::{Api, client, eventually, test_config};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The monolith on SQLite in `dir`, with a user registered (a row in identity.db, a
/// welcome email): stop it with the token, then await the handle.
async fn start(
    dir: &Path,
    email: &str,
) -> (
    chassis::CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let mut config = test_config(dir);
    config.database_url = None;
    let app = Application::build(config).await.expect("app builds");
    let api = Api {
        address: format!("http://127.0.0.1:{}", app.port()),
        client: client(),
    };
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    api.register(email).await;
    let mail = dir.join("mail");
    eventually("the welcome email", || async {
        let written = std::fs::read_dir(&mail).map_or(0, Iterator::count);
        if written > 0 {
            Ok(())
        } else {
            Err("no email yet".to_owned())
        }
    })
    .await;
    (stop, running)
}

async fn run_once(dir: &Path, email: &str) {
    let (stop, running) = start(dir, email).await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Every entry of `dir` and its subdirectories with its mode.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        found.push((path.display().to_string(), mode(&path)));
        if path.is_dir() {
            found.extend(modes(&path));
        }
    }
    found
}

/// `dir` and everything in it is owner-only, `expected` among them.
fn assert_private(dir: &Path, expected: &[&str]) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let entries = modes(dir);
    for name in expected {
        assert!(
            entries.iter().any(|(path, _)| path.ends_with(name)),
            "no {name} in {entries:?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|(path, _)| Path::new(path).extension().is_some_and(|x| x == "eml")),
        "no email in {entries:?}"
    );
    for (path, mode) in entries {
        let wanted = if Path::new(&path).is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, wanted, "{path} is {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_its_files_are_owner_only() {
    let root = tempfile::tempdir().unwrap();
    // Whatever the umask of whoever starts it.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("data");
    let (stop, running) = start(&dir, "private@example.com").await;
    // SQLite's -wal and -shm exist while it runs.
    assert_private(
        &dir,
        &[
            "identity.db",
            "identity.db-wal",
            "identity.db-shm",
            "jwt-secret",
            "mail",
        ],
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_private(&dir, &["identity.db", "jwt-secret", "mail"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_left_readable_is_tightened_at_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    run_once(&dir, "first@example.com").await;
    // As an older version left it: everything readable by everyone.
    for (path, _) in modes(&dir) {
        let wide = if Path::new(&path).is_dir() {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_once(&dir, "second@example.com").await;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("mail")), 0o700);
    let tightened: Vec<(String, u32)> = modes(&dir)
        .into_iter()
        .filter(|(path, _)| path.contains(".db") || path.ends_with("jwt-secret"))
        .collect();
    // A database per module, and the secret.
    assert!(tightened.len() >= 8, "{tightened:?}");
    for (path, mode) in tightened {
        assert_eq!(mode, 0o600, "{path}");
    }
}
