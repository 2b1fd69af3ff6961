//! User tokens (HS256 JWTs) and the extractors that demand them.
//!
//! identity issues tokens; every module that needs a caller verifies them with the
//! same [`Tokens`], taken from its router state through `FromRef`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, header};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::forwarded::TrustedProxies;
use crate::problem::Problem;

mod service;

pub use service::{
    Access, Caller, ServiceKeys, generate_service_keys, provision_service_keys, require_service,
};

pub const ISSUER: &str = "bazaar";
pub const AUDIENCE: &str = "bazaar-api";
/// The service name of the edge: the only signer whose forwarded user identity the
/// services behind it accept.
pub const GATEWAY: &str = "gateway";
/// Audience of the caller identity the gateway forwards (split topology).
pub const IDENTITY_AUDIENCE: &str = "bazaar-identity";
/// The header carrying the gateway-signed caller identity to the services behind it.
pub const IDENTITY_HEADER: HeaderName = HeaderName::from_static("x-bazaar-identity");
/// How long a service credential lives; callers refresh it well before.
const SERVICE_TOKEN_TTL_SECS: u64 = 120;
/// How long a forwarded identity lives: one request's hop from the gateway.
const IDENTITY_TTL_SECS: u64 = 60;

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
    /// The session (refresh-token family) the token was issued for; tokens from
    /// before sessions existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
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
    /// The session the caller's token belongs to (what logout revokes).
    pub session_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot sign token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("cannot read or write the secret at {path}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unusable service key {path}: {reason}")]
    Key { path: String, reason: &'static str },
}

/// Signs and verifies user tokens.
#[derive(Clone)]
pub struct Tokens(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// A second secret whose tokens verify but which never signs: the next secret
    /// before a rotation switches to it, the previous one after.
    also_accepted: Option<DecodingKey>,
    validation: Validation,
    ttl_secs: u64,
    /// Behind the gateway (split topology) callers are identified by the identity it
    /// forwards, signed with the service secret, and a bearer token is not accepted.
    behind_gateway: Option<ServiceKeys>,
    /// Whose `X-Forwarded-For` is believed ([`ClientIp`]).
    trusted_proxies: TrustedProxies,
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
            also_accepted: None,
            validation,
            ttl_secs,
            behind_gateway: None,
            trusted_proxies: TrustedProxies::default(),
        }))
    }

    /// The same tokens, believing `X-Forwarded-For` from `proxies` when taking the
    /// client's IP ([`ClientIp`]).
    #[must_use]
    pub fn with_trusted_proxies(&self, proxies: TrustedProxies) -> Self {
        self.with(|inner| inner.trusted_proxies = proxies)
    }

    /// A copy with `change` made.
    fn with(&self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner::clone(&self.0);
        change(&mut inner);
        Self(Arc::new(inner))
    }

    /// The same tokens for a service behind the gateway: callers are who the gateway
    /// says they are ([`IDENTITY_HEADER`], verified with `keys`); bearer tokens sent
    /// straight to the service are refused, so the edge's checks cannot be bypassed.
    #[must_use]
    pub fn behind_gateway(&self, keys: ServiceKeys) -> Self {
        self.with(|inner| inner.behind_gateway = Some(keys))
    }

    /// The same tokens, also accepting those signed with `secret` (never signing with
    /// it): how the secret is rotated without refusing a valid token.
    #[must_use]
    pub fn also_accepting(&self, secret: Option<&str>) -> Self {
        self.with(|inner| {
            inner.also_accepted = secret.map(|s| DecodingKey::from_secret(s.as_bytes()));
        })
    }

    /// Who is calling, from the request: the bearer token, or behind the gateway the
    /// identity it forwarded (or its reason for forwarding none).
    fn authenticate(&self, parts: &Parts) -> Result<Principal, Problem> {
        let Some(keys) = &self.0.behind_gateway else {
            return self.principal(&parts.headers).map_err(Refusal::problem);
        };
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(forwarded) = header(IDENTITY_HEADER) {
            return keys
                .verify_identity(forwarded)
                .ok_or_else(|| Refusal::Invalid.problem());
        }
        let refusal = header(IDENTITY_REFUSED_HEADER)
            .and_then(Refusal::from_code)
            .unwrap_or(Refusal::Missing);
        Err(refusal.problem())
    }

    /// The verified caller of a request's bearer token.
    pub fn principal(&self, headers: &axum::http::HeaderMap) -> Result<Principal, Refusal> {
        let token = bearer_token(headers)?;
        self.verify(token).ok_or(Refusal::Invalid)
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
        let secret = load_or_create_secret(data_dir, "jwt-secret")?;
        Ok(Self::new(secret.as_bytes(), ttl_secs))
    }

    pub fn ttl_secs(&self) -> u64 {
        self.0.ttl_secs
    }

    pub fn issue(&self, user_id: &str, role: Role) -> Result<String, TokenError> {
        self.issue_for_session(user_id, role, None)
    }

    /// A token of the session `session_id` (its refresh-token family).
    pub fn issue_for_session(
        &self,
        user_id: &str,
        role: Role,
        session_id: Option<&str>,
    ) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            role,
            sid: session_id.map(str::to_owned),
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
        std::iter::once(&self.0.decoding)
            .chain(&self.0.also_accepted)
            .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &self.0.validation).ok())
            .map(|data| Principal {
                user_id: data.claims.sub,
                role: data.claims.role,
                session_id: data.claims.sid,
            })
    }
}

/// A random 256-bit secret kept in `<data_dir>/<file>` (base64url, owner-only): read
/// if it is there, else generated and written on this first start. Processes sharing
/// the data dir agree on it: whoever writes it first wins.
pub fn load_or_create_secret(data_dir: &Path, file: &str) -> Result<String, TokenError> {
    let path = data_dir.join(file);
    let io_err = |source| TokenError::Secret {
        path: path.display().to_string(),
        source,
    };
    let read = || match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => Ok(Some(text.trim().to_owned())),
        Ok(_) => Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "holds fewer than 32 bytes: delete it to have a new secret generated",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    };
    chassis_core::private_fs::tighten(&path).map_err(io_err)?;
    if let Some(secret) = read()? {
        return Ok(secret);
    }
    chassis_core::private_fs::create_dir(data_dir).map_err(io_err)?;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    match write_private(&path, &secret) {
        Ok(()) => Ok(secret),
        // Another process sharing the data dir wrote it first: theirs is the secret.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read()?.ok_or_else(|| io_err(std::io::ErrorKind::NotFound.into()))
        }
        Err(e) => Err(io_err(e)),
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

/// Why a request carries no usable user identity. The gateway concludes it once at the
/// edge and forwards it ([`IDENTITY_REFUSED_HEADER`]), so a service behind it answers a
/// route that needs a user exactly as the monolith would, and a route that does not
/// still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    NotBearer,
    Invalid,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::NotBearer => "not_bearer",
            Refusal::Invalid => "invalid",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            Refusal::Missing,
            Refusal::Malformed,
            Refusal::NotBearer,
            Refusal::Invalid,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    pub fn problem(self) -> Problem {
        Problem::unauthorized(match self {
            Refusal::Missing => "missing bearer token",
            Refusal::Malformed => "malformed Authorization header",
            Refusal::NotBearer => "expected a Bearer token",
            Refusal::Invalid => "invalid or expired token",
        })
    }
}

/// The gateway's verdict on a caller's bearer token, when it refused it.
pub const IDENTITY_REFUSED_HEADER: HeaderName =
    HeaderName::from_static("x-bazaar-identity-refused");

/// The token of a request's `Authorization: Bearer` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, Refusal> {
    let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
    let value = value.to_str().map_err(|_| Refusal::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refusal::NotBearer);
    }
    Ok(token.trim())
}

/// The client's IP address, as the edge saw it: the TCP peer, or, behind the gateway
/// (split topology), the last `X-Forwarded-For` entry, which is the peer the gateway
/// itself saw and appended (anything before it is the client's say-so). Either way,
/// when that peer is one of the `trusted_proxies` (a load balancer, an ingress), the
/// client is looked for further left in `X-Forwarded-For`, through trusted proxies
/// only ([`TrustedProxies::client`]); with none configured the header is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S> FromRequestParts<S> for ClientIp
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tokens = Tokens::from_ref(state);
        let peer = if tokens.0.behind_gateway.is_some() {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|ip| ip.trim().parse().ok())
        } else {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|axum::extract::ConnectInfo(addr)| addr.ip())
        };
        Ok(ClientIp(peer.map(|peer| {
            tokens.0.trusted_proxies.client(peer, &parts.headers)
        })))
    }
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
        Tokens::from_ref(state).authenticate(parts).map(AuthUser)
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
    use super::service::ServiceClaims;
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
                role: Role::Admin,
                session_id: None,
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
            sid: None,
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
    fn service_credentials_and_identities_do_not_mix() {
        let keys = ServiceKeys::new(SECRET, "orders");
        let credential = keys.credential("catalog").unwrap();
        assert_eq!(
            keys.verify_credential(&credential, "catalog").as_deref(),
            Some("orders")
        );
        // Cached: the same credential until it nears expiry.
        assert_eq!(keys.credential("catalog").unwrap(), credential);
        assert!(keys.verify_identity(&credential).is_none());

        let gateway = ServiceKeys::new(SECRET, GATEWAY);
        let principal = Principal {
            user_id: "u1".into(),
            role: Role::Customer,
            session_id: Some("s1".into()),
        };
        let identity = gateway.forward_identity(&principal).unwrap();
        assert_eq!(keys.verify_identity(&identity), Some(principal));
        assert!(keys.verify_credential(&identity, "catalog").is_none());
        assert!(
            keys.verify_credential(&identity, IDENTITY_AUDIENCE)
                .is_none()
        );

        // A user token is neither, and another secret's credential is refused.
        let user = Tokens::new(SECRET, 60).issue("u1", Role::Admin).unwrap();
        assert!(keys.verify_credential(&user, "catalog").is_none());
        assert!(keys.verify_credential(&user, AUDIENCE).is_none());
        assert!(keys.verify_identity(&user).is_none());
        let other = ServiceKeys::new(b"another-secret-another-secret-xx", "orders");
        assert!(
            keys.verify_credential(&other.credential("catalog").unwrap(), "catalog")
                .is_none()
        );
    }

    #[test]
    fn a_credential_is_good_against_its_audience_only() {
        let keys = ServiceKeys::new(SECRET, "cart");
        let for_catalog = keys.credential("catalog").unwrap();
        let for_payments = keys.credential("payments").unwrap();
        assert_ne!(for_catalog, for_payments);
        assert!(keys.verify_credential(&for_catalog, "payments").is_none());
        assert_eq!(
            keys.verify_credential(&for_payments, "payments").as_deref(),
            Some("cart")
        );
    }

    #[test]
    fn only_the_gateway_may_assert_a_user() {
        let admin = Principal {
            user_id: "u1".into(),
            role: Role::Admin,
            session_id: None,
        };
        let orders = ServiceKeys::new(SECRET, "orders");
        let forged = orders.forward_identity(&admin).unwrap();
        assert!(orders.verify_identity(&forged).is_none());
        let gateway = ServiceKeys::new(SECRET, GATEWAY);
        let forwarded = gateway.forward_identity(&admin).unwrap();
        assert_eq!(orders.verify_identity(&forwarded), Some(admin));
    }

    fn headers_with(token: &str) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn access_lets_in_the_registered_callers_only() {
        let payments = Access {
            keys: ServiceKeys::new(SECRET, "payments"),
            provider: "payments",
            callers: vec!["orders"],
        };
        let status = |service: &'static str, audience: &str| {
            let token = ServiceKeys::new(SECRET, service)
                .credential(audience)
                .unwrap();
            payments
                .check(&headers_with(&token))
                .map(|Caller(c)| c)
                .map_err(|p| p.status)
        };
        assert_eq!(status("orders", "payments"), Ok("orders".to_owned()));
        // A process running a caller among others.
        assert_eq!(
            status("cart+orders", "payments"),
            Ok("cart+orders".to_owned())
        );
        assert_eq!(status("analytics", "payments"), Err(403));
        assert_eq!(status("cart", "catalog"), Err(401));
        assert_eq!(
            payments
                .check(&axum::http::HeaderMap::new())
                .map_err(|p| p.status)
                .unwrap_err(),
            401
        );
    }

    /// A generated key set for `services`, and each one's [`ServiceKeys`].
    fn key_set(services: &[&'static str]) -> (tempfile::TempDir, Vec<ServiceKeys>) {
        let dir = tempfile::tempdir().unwrap();
        generate_service_keys(dir.path(), services).unwrap();
        let keys = services
            .iter()
            .map(|s| ServiceKeys::from_dir(dir.path(), s).unwrap())
            .collect();
        (dir, keys)
    }

    /// `claims` signed with `signer`'s own key, whatever they say.
    fn signed_by(signer: &ServiceKeys, claims: &ServiceClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &signer.0.encoding).unwrap()
    }

    fn claims(sub: &str, role: Option<Role>, by: Option<&str>, aud: &str) -> ServiceClaims {
        let now = jsonwebtoken::get_current_timestamp();
        ServiceClaims {
            sub: sub.into(),
            role,
            sid: None,
            by: by.map(str::to_owned),
            exp: now + 60,
            iat: now,
            iss: ISSUER.into(),
            aud: aud.into(),
        }
    }

    #[test]
    fn per_service_keys_verify_each_signer_with_its_own_public_key() {
        let (dir, keys) = key_set(&["orders", "analytics", "payments", GATEWAY]);
        let [orders, analytics, payments, gateway] = &keys[..] else {
            unreachable!()
        };
        let credential = orders.credential("payments").unwrap();
        assert_eq!(
            payments
                .verify_credential(&credential, "payments")
                .as_deref(),
            Some("orders")
        );
        let principal = Principal {
            user_id: "u1".into(),
            role: Role::Admin,
            session_id: None,
        };
        let identity = gateway.forward_identity(&principal).unwrap();
        assert_eq!(payments.verify_identity(&identity), Some(principal.clone()));
        assert!(
            payments
                .verify_credential(&identity, IDENTITY_AUDIENCE)
                .is_none()
        );
        assert!(payments.verify_identity(&credential).is_none());

        // analytics holds only its own key: it cannot pass for orders, neither as
        // `sub` nor by naming itself as `by`, nor assert a user as the gateway.
        let forged = signed_by(analytics, &claims("orders", None, None, "payments"));
        assert!(payments.verify_credential(&forged, "payments").is_none());
        let forged = signed_by(
            analytics,
            &claims("orders", None, Some("analytics"), "payments"),
        );
        assert!(payments.verify_credential(&forged, "payments").is_none());
        let forged = signed_by(
            analytics,
            &claims("u1", Some(Role::Admin), Some(GATEWAY), IDENTITY_AUDIENCE),
        );
        assert!(payments.verify_identity(&forged).is_none());
        assert!(
            payments
                .verify_identity(&analytics.forward_identity(&principal).unwrap())
                .is_none()
        );
        // Its own credential is still its own.
        assert_eq!(
            payments
                .verify_credential(&analytics.credential("payments").unwrap(), "payments")
                .as_deref(),
            Some("analytics")
        );

        // Neither the shared secret's tokens nor an HS256 token keyed with a public
        // key are accepted once keys are per service.
        let shared = ServiceKeys::new(SECRET, "orders");
        assert!(
            payments
                .verify_credential(&shared.credential("payments").unwrap(), "payments")
                .is_none()
        );
        let public_pem = std::fs::read(dir.path().join("orders.pub")).unwrap();
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("orders", None, None, "payments"),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert!(payments.verify_credential(&confused, "payments").is_none());
    }

    #[test]
    fn access_with_per_service_keys_refuses_a_credential_signed_by_another() {
        let (_dir, keys) = key_set(&["orders", "analytics", "payments"]);
        let [orders, analytics, payments] = &keys[..] else {
            unreachable!()
        };
        let access = Access {
            keys: payments.clone(),
            provider: "payments",
            callers: vec!["orders"],
        };
        let status = |token: &str| {
            access
                .check(&headers_with(token))
                .map(|Caller(c)| c)
                .map_err(|p| p.status)
        };
        assert_eq!(
            status(&orders.credential("payments").unwrap()),
            Ok("orders".to_owned())
        );
        assert_eq!(status(&analytics.credential("payments").unwrap()), Err(403));
        let forged = signed_by(analytics, &claims("orders", None, None, "payments"));
        assert_eq!(status(&forged), Err(401));
    }

    #[test]
    fn service_keys_from_dir_refuse_missing_mismatched_and_garbage_keys() {
        let dir = tempfile::tempdir().unwrap();
        generate_service_keys(dir.path(), &["orders", "cart"]).unwrap();
        let path = dir.path();
        assert!(matches!(
            ServiceKeys::from_dir(path, "payments"),
            Err(TokenError::Secret { .. })
        ));
        // orders' private key beside cart's public key under the name orders.
        std::fs::copy(path.join("cart.pub"), path.join("mixed.pub")).unwrap();
        std::fs::copy(path.join("orders.key"), path.join("mixed.key")).unwrap();
        assert!(matches!(
            ServiceKeys::from_dir(path, "mixed"),
            Err(TokenError::Key { .. })
        ));
        std::fs::write(path.join("bad.key"), b"not a key").unwrap();
        assert!(matches!(
            ServiceKeys::from_dir(path, "bad"),
            Err(TokenError::Key { .. })
        ));
        std::fs::remove_file(path.join("bad.key")).unwrap();
        std::fs::remove_file(path.join("mixed.key")).unwrap();
        std::fs::remove_file(path.join("mixed.pub")).unwrap();
        std::fs::write(path.join("bad.pub"), b"short").unwrap();
        assert!(matches!(
            ServiceKeys::from_dir(path, "orders"),
            Err(TokenError::Key { .. })
        ));
        std::fs::remove_file(path.join("bad.pub")).unwrap();
        assert!(ServiceKeys::from_dir(path, "orders").is_ok());
        // Generation keeps what is there.
        assert!(generate_service_keys(path, &["orders"]).is_err());
    }

    #[test]
    fn a_service_pair_rotates_with_two_public_keys_for_a_while() {
        let (current, next) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate_service_keys(current.path(), &["orders", "payments"]).unwrap();
        generate_service_keys(next.path(), &["orders"]).unwrap();
        let old = ServiceKeys::from_dir(current.path(), "orders").unwrap();
        let new = ServiceKeys::from_dir(next.path(), "orders").unwrap();
        let verified_by = |payments: &ServiceKeys| {
            [&old, &new].map(|orders| {
                let credential = orders.credential("payments").unwrap();
                payments
                    .verify_credential(&credential, "payments")
                    .is_some()
            })
        };
        let payments = ServiceKeys::from_dir(current.path(), "payments").unwrap();
        assert_eq!(verified_by(&payments), [true, false]);
        // Step 1: every process gets the new public key beside the old one.
        std::fs::copy(
            next.path().join("orders.pub"),
            current.path().join("orders.next.pub"),
        )
        .unwrap();
        let payments = ServiceKeys::from_dir(current.path(), "payments").unwrap();
        assert_eq!(verified_by(&payments), [true, true]);
        // Step 2 (orders signs with the new key) needs nothing here; step 3 retires
        // the old public key.
        std::fs::remove_file(current.path().join("orders.pub")).unwrap();
        let payments = ServiceKeys::from_dir(current.path(), "payments").unwrap();
        assert_eq!(verified_by(&payments), [false, true]);
    }

    #[test]
    fn provisioned_directories_hold_one_private_key_and_every_public_key() {
        let root = tempfile::tempdir().unwrap();
        let services = ["gateway", "orders", "payments"];
        let dirs = provision_service_keys(root.path(), &services).unwrap();
        let listing = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            listing(&dirs[1]),
            ["gateway.pub", "orders.key", "orders.pub", "payments.pub"]
        );
        let orders = ServiceKeys::from_dir(&dirs[1], "orders").unwrap();
        let payments = ServiceKeys::from_dir(&dirs[2], "payments").unwrap();
        let credential = orders.credential("payments").unwrap();
        assert_eq!(
            payments
                .verify_credential(&credential, "payments")
                .as_deref(),
            Some("orders")
        );
        // A second provisioning keeps the pairs: what was signed still verifies.
        let again = provision_service_keys(root.path(), &services).unwrap();
        let payments = ServiceKeys::from_dir(&again[2], "payments").unwrap();
        assert!(
            payments
                .verify_credential(&credential, "payments")
                .is_some()
        );
        // Half a pair (orders' private key deleted to rotate it) is replaced whole, and
        // every directory gets the new public key.
        std::fs::remove_file(root.path().join("pairs").join("orders.key")).unwrap();
        let rotated = provision_service_keys(root.path(), &services).unwrap();
        let orders = ServiceKeys::from_dir(&rotated[1], "orders").unwrap();
        let payments = ServiceKeys::from_dir(&rotated[2], "payments").unwrap();
        assert!(
            payments
                .verify_credential(&credential, "payments")
                .is_none()
        );
        let fresh = orders.credential("payments").unwrap();
        assert!(payments.verify_credential(&fresh, "payments").is_some());
    }

    #[test]
    fn a_rotated_secret_is_accepted_alongside_but_never_signs() {
        let (old, new) = ("o".repeat(32), "n".repeat(32));
        let signing_old = Tokens::new(old.as_bytes(), 60);
        let signing_new = Tokens::new(new.as_bytes(), 60);
        let (by_old, by_new) = (
            signing_old.issue("u", Role::Customer).unwrap(),
            signing_new.issue("u", Role::Customer).unwrap(),
        );
        // Before the switch: still signing with the old, already accepting the new.
        let before = signing_old.also_accepting(Some(&new));
        assert!(before.verify(&by_old).is_some() && before.verify(&by_new).is_some());
        assert!(
            signing_old
                .verify(&before.issue("u", Role::Customer).unwrap())
                .is_some()
        );
        // After: signing with the new, accepting the old until its tokens expire.
        let after = signing_new.also_accepting(Some(&old));
        assert!(after.verify(&by_old).is_some() && after.verify(&by_new).is_some());
        assert!(
            signing_new
                .verify(&after.issue("u", Role::Customer).unwrap())
                .is_some()
        );
        assert!(signing_new.verify(&by_old).is_none());
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
