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

use crate::problem::Problem;

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
}

/// Signs and verifies user tokens.
#[derive(Clone)]
pub struct Tokens(Arc<Inner>);

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
    /// Behind the gateway (split topology) callers are identified by the identity it
    /// forwards, signed with the service secret, and a bearer token is not accepted.
    behind_gateway: Option<ServiceKeys>,
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
            behind_gateway: None,
        }))
    }

    /// The same tokens for a service behind the gateway: callers are who the gateway
    /// says they are ([`IDENTITY_HEADER`], verified with `keys`); bearer tokens sent
    /// straight to the service are refused, so the edge's checks cannot be bypassed.
    #[must_use]
    pub fn behind_gateway(&self, keys: ServiceKeys) -> Self {
        Self(Arc::new(Inner {
            encoding: self.0.encoding.clone(),
            decoding: self.0.decoding.clone(),
            validation: self.0.validation.clone(),
            ttl_secs: self.0.ttl_secs,
            behind_gateway: Some(keys),
        }))
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
        jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .ok()
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

/// Claims of service credentials and forwarded identities.
#[derive(Debug, Serialize, Deserialize)]
struct ServiceClaims {
    /// The calling service, or the forwarded user.
    sub: String,
    /// The forwarded user's role (identities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    /// The forwarded user's session (identities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// The service that signed a forwarded identity: only the gateway's is believed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    exp: u64,
    iat: u64,
    iss: String,
    aud: String,
}

/// Split topology: the service secret every process of a deployment shares. It signs
/// short-lived credentials for calls between services (subject the calling service,
/// audience the called module, so a credential is good against that module only) and
/// the caller identity the gateway forwards (audience [`IDENTITY_AUDIENCE`], signer
/// [`GATEWAY`]); user tokens cannot pass for either, nor one for the other.
#[derive(Clone)]
pub struct ServiceKeys(Arc<ServiceInner>);

struct ServiceInner {
    service: &'static str,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Audience set per call: the module called.
    service_validation: Validation,
    identity_validation: Validation,
    /// This service's current credential per audience and when it expires.
    cached: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("service", &self.0.service)
            .finish_non_exhaustive()
    }
}

impl ServiceKeys {
    /// `service` names this process in the credentials it presents.
    pub fn new(secret: &[u8], service: &'static str) -> Self {
        let validation = |audience: &str| {
            let mut v = Validation::new(Algorithm::HS256);
            v.set_issuer(&[ISSUER]);
            v.set_audience(&[audience]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            v.leeway = 5;
            v
        };
        Self(Arc::new(ServiceInner {
            service,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            // Replaced per call by the module called.
            service_validation: validation(IDENTITY_AUDIENCE),
            identity_validation: validation(IDENTITY_AUDIENCE),
            cached: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    pub fn service(&self) -> &'static str {
        self.0.service
    }

    fn sign(
        &self,
        sub: &str,
        role: Option<Role>,
        sid: Option<&str>,
        aud: &str,
        ttl: u64,
    ) -> Result<(String, u64), TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = ServiceClaims {
            sub: sub.to_owned(),
            role,
            sid: sid.map(str::to_owned),
            by: role.map(|_| self.0.service.to_owned()),
            iat: now,
            exp: now + ttl,
            iss: ISSUER.to_owned(),
            aud: aud.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(TokenError::Sign)?;
        Ok((token, claims.exp))
    }

    /// This service's credential for calling the module `audience`: reused until a
    /// third of its life is left, so signing is not on every call's path.
    pub fn credential(&self, audience: &str) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        // A poisoned lock only means another caller panicked mid-refresh: the cached
        // value is still a whole (token, expiry) pair or None.
        let mut cached = self
            .0
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, exp)) = cached.get(audience) {
            if *exp > now + SERVICE_TOKEN_TTL_SECS / 3 {
                return Ok(token.clone());
            }
        }
        let (token, exp) =
            self.sign(self.0.service, None, None, audience, SERVICE_TOKEN_TTL_SECS)?;
        cached.insert(audience.to_owned(), (token.clone(), exp));
        Ok(token)
    }

    /// The calling service named by a valid credential for the module `audience`.
    pub fn verify_credential(&self, token: &str, audience: &str) -> Option<String> {
        let mut validation = self.0.service_validation.clone();
        validation.set_audience(&[audience]);
        jsonwebtoken::decode::<ServiceClaims>(token, &self.0.decoding, &validation)
            .ok()
            .filter(|data| data.claims.role.is_none())
            .map(|data| data.claims.sub)
    }

    /// The gateway's statement of who the caller is, for one hop.
    pub fn forward_identity(&self, principal: &Principal) -> Result<String, TokenError> {
        self.sign(
            &principal.user_id,
            Some(principal.role),
            principal.session_id.as_deref(),
            IDENTITY_AUDIENCE,
            IDENTITY_TTL_SECS,
        )
        .map(|(token, _)| token)
    }

    /// The user a forwarded identity names, if the gateway signed it: no other
    /// service may assert who the end user is.
    pub fn verify_identity(&self, token: &str) -> Option<Principal> {
        let data = jsonwebtoken::decode::<ServiceClaims>(
            token,
            &self.0.decoding,
            &self.0.identity_validation,
        )
        .ok()?;
        if data.claims.by.as_deref() != Some(GATEWAY) {
            return None;
        }
        Some(Principal {
            user_id: data.claims.sub,
            role: data.claims.role?,
            session_id: data.claims.sid,
        })
    }
}

/// Who may call one module's contract: the module (a credential's audience must name
/// it) and the modules that call it per the registry.
#[derive(Debug, Clone)]
pub struct Access {
    pub keys: ServiceKeys,
    pub provider: &'static str,
    pub callers: Vec<&'static str>,
}

impl Access {
    /// The caller of a request's credential, or why it is refused: 401 without a
    /// valid credential for `provider`, 403 when no module of the calling service
    /// calls `provider`.
    pub fn check(&self, headers: &axum::http::HeaderMap) -> Result<Caller, Problem> {
        let token = bearer_token(headers).map_err(Refusal::problem)?;
        let caller = self
            .keys
            .verify_credential(token, self.provider)
            .ok_or_else(|| Problem::unauthorized("invalid or expired service credential"))?;
        // `sub` is the calling process's modules, `+`-joined when it runs several.
        if caller.split('+').any(|m| self.callers.contains(&m)) {
            Ok(Caller(caller))
        } else {
            Err(Problem::forbidden(format!(
                "{caller} may not call {}",
                self.provider
            )))
        }
    }
}

/// Internal routes: only a caller presenting a valid service credential for this
/// module, from a module allowed to call it, gets through ([`Access::check`]).
pub async fn require_service(
    axum::extract::State(access): axum::extract::State<Access>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, body) = req.into_parts();
    let caller = access.check(&parts.headers);
    match caller {
        Ok(caller) => {
            parts.extensions.insert(caller);
            req = axum::extract::Request::from_parts(parts, body);
            next.run(req).await
        }
        Err(problem) => problem.into_response(),
    }
}

/// The service that made an internal call.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

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
/// itself saw and appended (anything before it is the client's say-so). The monolith
/// reads no `X-Forwarded-For`, as the edge's rate limiter does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S> FromRequestParts<S> for ClientIp
where
    Tokens: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if Tokens::from_ref(state).0.behind_gateway.is_some() {
            let last = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|ip| ip.trim().parse().ok());
            return Ok(ClientIp(last));
        }
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|axum::extract::ConnectInfo(addr)| addr.ip()),
        ))
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
