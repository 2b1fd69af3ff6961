//! The secrets every child shares: the configured ones, or ones generated once and
//! kept in the data dir.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use base64::Engine as _;

/// The configured secret, or the one kept in `path` (created once: base64url of 32
/// random bytes, mode 0600), the format `chassis::auth::Tokens` keeps `jwt-secret` in.
pub(crate) fn load_or_create_secret(
    configured: Option<&str>,
    path: &Path,
) -> anyhow::Result<String> {
    if let Some(secret) = configured {
        return Ok(secret.to_owned());
    }
    let read = |path: &Path| -> anyhow::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().len() >= 32 => Ok(Some(text.trim().to_owned())),
            Ok(_) => bail!(
                "{} holds fewer than 32 bytes: delete it to have a new secret generated",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
        }
    };
    if let Some(secret) = read(path)? {
        return Ok(secret);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret)
        }
        // Another start created it meanwhile: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.with_context(|| format!("{} vanished", path.display()))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("service-secret");
        let first = load_or_create_secret(None, &path).unwrap();
        assert_eq!(first.len(), 43, "base64url of 32 bytes, unpadded");
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(load_or_create_secret(None, &path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = "c".repeat(40);
        assert_eq!(
            load_or_create_secret(Some(&configured), &path).unwrap(),
            configured
        );
        std::fs::write(dir.path().join("short"), "tiny").unwrap();
        let err = load_or_create_secret(None, &dir.path().join("short")).unwrap_err();
        assert!(err.to_string().contains("fewer than 32"), "{err}");
    }
}
