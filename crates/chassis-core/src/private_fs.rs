//! The data dir holds secrets and personal data (password hashes and addresses in
//! the databases, sent mail, the token secret): it is for the service's own user
//! alone, whatever the umask. Directories are made 0700 and files 0600, and ones an
//! older version left wider are tightened at start. Elsewhere than Unix the
//! platform's defaults apply.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` and its missing parents owner-only; tightens it if it exists and
/// others may enter it.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    tighten(dir)
}

/// Takes group and other permissions off `path`, if it exists and has any.
pub fn tighten(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let mode = match std::fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "others could read this: making it owner-only"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Opens `path` for writing, emptied; created owner-only.
pub fn create_file(path: &Path) -> io::Result<File> {
    owner_only(OpenOptions::new().write(true).create(true).truncate(true)).open(path)
}

/// An SQLite database file, before SQLite opens it: created (empty, which SQLite
/// takes as a new database) owner-only, as are its `-wal`, `-shm` and `-journal`,
/// which SQLite creates with the database file's mode. Existing ones are tightened.
pub fn prepare_sqlite_file(path: &Path) -> io::Result<()> {
    owner_only(OpenOptions::new().write(true).create(true).truncate(false)).open(path)?;
    tighten(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        tighten(Path::new(&sidecar))?;
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_dirs_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("x.eml");
        std::io::Write::write_all(&mut create_file(&file).unwrap(), b"hello").unwrap();
        assert_eq!(mode(&file), 0o600);
        // Rewritten: emptied first.
        std::io::Write::write_all(&mut create_file(&file).unwrap(), b"hi").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"hi");
    }

    #[test]
    fn wider_ones_are_tightened_and_contents_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("identity.db");
        let wal = dir.join("identity.db-wal");
        for file in [&db, &wal] {
            std::fs::write(file, b"data").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        create_dir(&dir).unwrap();
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        assert_eq!(std::fs::read(&db).unwrap(), b"data");
        assert!(!dir.join("identity.db-shm").exists());
        // A new database file is created empty, owner-only.
        let fresh = dir.join("orders.db");
        prepare_sqlite_file(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(std::fs::metadata(&fresh).unwrap().len(), 0);
    }
}
