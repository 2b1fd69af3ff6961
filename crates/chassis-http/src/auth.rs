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
    #[error("unusable service key {path}: {reason}")]
    Key { path: String, reason: &'static str },
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

/// Writes a fresh Ed25519 key pair for each of `services` into `dir` (created
/// owner-only if missing): `<name>.key`, the PKCS#8 private key (PEM, owner-only), and
/// `<name>.pub`, its SPKI public key (PEM), the layout [`ServiceKeys::from_dir`] reads.
/// Existing files are not overwritten.
pub fn generate_service_keys(dir: &Path, services: &[&str]) -> Result<(), TokenError> {
    use ring::signature::KeyPair;
    let io_err = |path: &Path, source| TokenError::Secret {
        path: path.display().to_string(),
        source,
    };
    chassis_core::private_fs::create_dir(dir).map_err(|e| io_err(dir, e))?;
    let rng = ring::rand::SystemRandom::new();
    for service in services {
        let key_path = dir.join(format!("{service}.key"));
        let failed = || TokenError::Key {
            path: key_path.display().to_string(),
            reason: "cannot generate an Ed25519 key",
        };
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| failed())?;
        let pair =
            ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| failed())?;
        // SPKI: the Ed25519 algorithm identifier, then the 32-byte key as a bit string.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        write_private(&key_path, &pem("PRIVATE KEY", pkcs8.as_ref()))
            .map_err(|e| io_err(&key_path, e))?;
        let pub_path = dir.join(format!("{service}.pub"));
        write_private(&pub_path, &pem("PUBLIC KEY", &spki)).map_err(|e| io_err(&pub_path, e))?;
    }
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so 64-byte chunks are whole characters.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + "-----END " + label + "-----\n"
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

/// Split topology: the keys that sign short-lived credentials for calls between
/// services (subject the calling service, audience the called module, so a credential
/// is good against that module only) and the caller identity the gateway forwards
/// (audience [`IDENTITY_AUDIENCE`], signer [`GATEWAY`]); user tokens cannot pass for
/// either, nor one for the other.
///
/// Either one HMAC secret shared by every process ([`ServiceKeys::new`]: any process
/// can sign as any other), or per-service Ed25519 keys ([`ServiceKeys::from_dir`]:
/// a process signs with its own private key and a token is checked against the public
/// key of the service it claims as signer, so no process can sign as another).
#[derive(Clone)]
pub struct ServiceKeys(Arc<ServiceInner>);

struct ServiceInner {
    service: &'static str,
    algorithm: Algorithm,
    encoding: EncodingKey,
    verifying: Verifying,
    /// Audience set per call: the module called.
    service_validation: Validation,
    identity_validation: Validation,
    /// This service's current credential per audience and when it expires.
    cached: std::sync::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

enum Verifying {
    /// The shared secret verifies every signer.
    Shared(DecodingKey),
    /// Each signer's public key, by service name.
    PerService(std::collections::HashMap<String, DecodingKey>),
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("service", &self.0.service)
            .field("algorithm", &self.0.algorithm)
            .finish_non_exhaustive()
    }
}

/// The claim naming who signed a token, read before its signature is checked only to
/// pick the public key that then checks it.
#[derive(Deserialize)]
struct Signer {
    sub: String,
    #[serde(default)]
    by: Option<String>,
}

impl ServiceKeys {
    /// `service` names this process in the credentials it presents; every process
    /// shares `secret`.
    pub fn new(secret: &[u8], service: &'static str) -> Self {
        Self::with(
            service,
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            Verifying::Shared(DecodingKey::from_secret(secret)),
        )
    }

    /// Per-service Ed25519 keys from `dir`: `<service>.key`, this process's private
    /// key (PKCS#8, PEM or DER), and `<name>.pub`, the public key (SPKI PEM, or the raw
    /// 32 bytes) of every service whose tokens it accepts, `gateway` included. Keys are
    /// named by service name: a process running several modules is `cart+orders`.
    pub fn from_dir(dir: &Path, service: &'static str) -> Result<Self, TokenError> {
        let key_path = dir.join(format!("{service}.key"));
        let bad = |path: &Path, reason| TokenError::Key {
            path: path.display().to_string(),
            reason,
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TokenError::Secret {
                path: path.display().to_string(),
                source,
            })
        };
        let private = read(&key_path)?;
        let encoding = if private.starts_with(b"-----BEGIN") {
            EncodingKey::from_ed_pem(&private)
                .map_err(|_| bad(&key_path, "not an Ed25519 PKCS#8 PEM private key"))?
        } else {
            EncodingKey::from_ed_der(&private)
        };
        let mut public = std::collections::HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| TokenError::Secret {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| TokenError::Secret {
                    path: dir.display().to_string(),
                    source,
                })?
                .path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pub"))
            else {
                continue;
            };
            let bytes = read(&path)?;
            let key = if bytes.starts_with(b"-----BEGIN") {
                DecodingKey::from_ed_pem(&bytes)
                    .map_err(|_| bad(&path, "not an Ed25519 SPKI PEM public key"))?
            } else if bytes.len() == 32 {
                DecodingKey::from_ed_der(&bytes)
            } else {
                return Err(bad(&path, "not an Ed25519 public key"));
            };
            public.insert(name.to_owned(), key);
        }
        let keys = Self::with(
            service,
            Algorithm::EdDSA,
            encoding,
            Verifying::PerService(public),
        );
        // Fail at start, not on the first call: the private key must sign, and match
        // this service's public key when the directory holds it.
        let probe = keys
            .credential(service)
            .map_err(|_| bad(&key_path, "not an Ed25519 PKCS#8 private key"))?;
        if let Verifying::PerService(public) = &keys.0.verifying {
            if public.contains_key(service) && keys.verify_credential(&probe, service).is_none() {
                return Err(bad(
                    &key_path,
                    "does not match the public key of the same name",
                ));
            }
        }
        keys.0
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(keys)
    }

    fn with(
        service: &'static str,
        algorithm: Algorithm,
        encoding: EncodingKey,
        verifying: Verifying,
    ) -> Self {
        // Only the one algorithm is accepted: `alg: none`, and an HS256 token made
        // with a public key as its secret, fail.
        let validation = |audience: &str| {
            let mut v = Validation::new(algorithm);
            v.set_issuer(&[ISSUER]);
            v.set_audience(&[audience]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            v.leeway = 5;
            v
        };
        Self(Arc::new(ServiceInner {
            service,
            algorithm,
            encoding,
            verifying,
            // Replaced per call by the module called.
            service_validation: validation(IDENTITY_AUDIENCE),
            identity_validation: validation(IDENTITY_AUDIENCE),
            cached: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// Decodes `token` if the service it names as signer signed it: `sub` for a
    /// credential, `by` for a forwarded identity (never the other, so a service cannot
    /// sign a credential with its own key and name another as `sub`).
    fn decode(
        &self,
        token: &str,
        validation: &Validation,
        identity: bool,
    ) -> Option<ServiceClaims> {
        let key = match &self.0.verifying {
            Verifying::Shared(key) => key,
            Verifying::PerService(public) => {
                let payload = token.split('.').nth(1)?;
                let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .ok()?;
                let signer: Signer = serde_json::from_slice(&json).ok()?;
                let name = if identity { signer.by? } else { signer.sub };
                public.get(&name)?
            }
        };
        jsonwebtoken::decode::<ServiceClaims>(token, key, validation)
            .ok()
            .map(|data| data.claims)
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
        let token = jsonwebtoken::encode(&Header::new(self.0.algorithm), &claims, &self.0.encoding)
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
        self.decode(token, &validation, false)
            .filter(|claims| claims.role.is_none() && claims.by.is_none())
            .map(|claims| claims.sub)
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
        let claims = self.decode(token, &self.0.identity_validation, true)?;
        if claims.by.as_deref() != Some(GATEWAY) {
            return None;
        }
        Some(Principal {
            user_id: claims.sub,
            role: claims.role?,
            session_id: claims.sid,
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
