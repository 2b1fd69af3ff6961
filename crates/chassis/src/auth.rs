//! User tokens (HS256 JWTs) and the extractors that demand them.
//!
//! identity issues tokens; every module that needs a caller verifies them with the
//! same [`Tokens`], taken from its router state through `FromRef`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::Problem;

pub const ISSUER: &str = "bazaar";
pub const AUDIENCE: &str = "bazaar-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
    iat: u64,
    iss: String,
    aud: String,
}

/// Who is calling: the verified subject of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("cannot read or write the token secret at {path}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Signs and verifies user tokens.
#[derive(Clone)]
pub struct Tokens(Arc<Inner>);

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl_secs", &self.0.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Only HS256 is accepted: `alg: none` and algorithm-confusion tokens fail.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self(Arc::new(Inner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }))
    }

    /// The configured secret, or the one kept in `<data_dir>/jwt-secret`, created with
    /// 256 random bits on first start. There is no built-in default secret.
    pub fn load_or_create(
        configured: Option<&str>,
        data_dir: &Path,
        ttl_secs: u64,
    ) -> Result<Self, TokenError> {
        if let Some(secret) = configured {
            return Ok(Self::new(secret.as_bytes(), ttl_secs));
        }
        let path = data_dir.join("jwt-secret");
        let io_err = |source| TokenError::Secret {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(secret) if secret.trim().len() >= 32 => {
                return Ok(Self::new(secret.trim().as_bytes(), ttl_secs));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        write_private(&path, &secret).map_err(io_err)?;
        Ok(Self::new(secret.as_bytes(), ttl_secs))
    }

    pub fn ttl_secs(&self) -> u64 {
        self.0.ttl_secs
    }

    pub fn issue(&self, user_id: &str, role: Role) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            role,
            iat: now,
            exp: now + self.0.ttl_secs,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(TokenError::Sign)
    }

    /// Verifies signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> Option<Principal> {
        jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .ok()
            .map(|data| Principal {
                user_id: data.claims.sub,
                role: data.claims.role,
            })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The router state of a module's public routes: its service, and the token verifier
/// the [`AuthUser`] / [`AdminUser`] extractors take from it.
#[derive(Debug, Clone)]
pub struct ApiState<S> {
    pub service: S,
    pub tokens: Tokens,
}

impl<S> FromRef<ApiState<S>> for Tokens {
    fn from_ref(state: &ApiState<S>) -> Tokens {
        state.tokens.clone()
    }
}

fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthorized("missing bearer token"))?;
    let value = value
        .to_str()
        .map_err(|_| Problem::unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Problem::unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Problem::unauthorized("expected a Bearer token"));
    }
    Ok(token.trim())
}

/// A signed-in caller (any role).
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

impl<S> FromRequestParts<S> for AuthUser
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        Tokens::from_ref(state)
            .verify(token)
            .map(AuthUser)
            .ok_or_else(|| Problem::unauthorized("invalid or expired token"))
    }
}

/// A signed-in caller with the admin role; others get 403.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Principal);

impl<S> FromRequestParts<S> for AdminUser
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        if principal.role == Role::Admin {
            Ok(AdminUser(principal))
        } else {
            Err(Problem::forbidden("this route requires the admin role"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        let tokens = Tokens::new(SECRET, 60);
        let token = tokens.issue("u1", Role::Admin).unwrap();
        assert_eq!(
            tokens.verify(&token),
            Some(Principal {
                user_id: "u1".into(),
                role: Role::Admin
            })
        );
    }

    #[test]
    fn rejects_other_secret_alg_none_and_expired() {
        let tokens = Tokens::new(SECRET, 60);
        let other = Tokens::new(b"another-secret-another-secret-xx", 60);
        assert!(
            tokens
                .verify(&other.issue("u1", Role::Customer).unwrap())
                .is_none()
        );

        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let now = jsonwebtoken::get_current_timestamp();
        let claims = format!(
            r#"{{"sub":"u1","role":"admin","exp":{},"iat":{now},"iss":"bazaar","aud":"bazaar-api"}}"#,
            now + 60
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert!(tokens.verify(&none).is_none());

        let expired = Claims {
            sub: "u1".into(),
            role: Role::Customer,
            iat: now - 3600,
            exp: now - 600,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(tokens.verify(&token).is_none());
    }

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tokens::load_or_create(None, dir.path(), 60).unwrap();
        let b = Tokens::load_or_create(None, dir.path(), 60).unwrap();
        let token = a.issue("u", Role::Customer).unwrap();
        assert!(b.verify(&token).is_some());
        let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
        assert!(secret.len() >= 32);
    }
}
