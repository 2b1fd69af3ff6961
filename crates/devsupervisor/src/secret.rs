//! The secrets every child shares: the configured ones, or ones generated once and
//! kept in the data dir.

use std::path::Path;

use crate::DevError;

/// The configured secret, or the one kept in `path` (created once: base64url of 32
/// random bytes, mode 0600), kept as `chassis::auth` keeps `jwt-secret`.
pub(crate) fn load_or_create_secret(
    configured: Option<&str>,
    path: &Path,
) -> Result<String, DevError> {
    if let Some(secret) = configured {
        return Ok(secret.to_owned());
    }
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return Err(DevError::SecretPath {
            path: path.to_owned(),
        });
    };
    Ok(chassis::auth::load_or_create_secret(dir, file)?)
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
        let text = chassis::error::chain(&err);
        assert!(text.contains("fewer than 32"), "{text}");
    }
}
