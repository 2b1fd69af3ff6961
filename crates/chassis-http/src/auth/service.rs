//! Credentials between services: what a service signs to call another (audience the
//! called module), the user identity the gateway forwards, the keys they are signed
//! with (one shared secret, or a key pair per service), and who may call a module's
//! internal routes.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    GATEWAY, IDENTITY_AUDIENCE, IDENTITY_TTL_SECS, ISSUER, Principal, Refusal, Role,
    SERVICE_TOKEN_TTL_SECS, TokenError, bearer_token, write_private,
};
use crate::problem::Problem;

/// Claims of service credentials and forwarded identities.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ServiceClaims {
    /// The calling service, or the forwarded user.
    pub(super) sub: String,
    /// The forwarded user's role (identities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<Role>,
    /// The forwarded user's session (identities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sid: Option<String>,
    /// The service that signed a forwarded identity: only the gateway's is believed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) by: Option<String>,
    pub(super) exp: u64,
    pub(super) iat: u64,
    pub(super) iss: String,
    pub(super) aud: String,
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
pub struct ServiceKeys(pub(super) Arc<ServiceInner>);

pub(super) struct ServiceInner {
    service: &'static str,
    algorithm: Algorithm,
    pub(super) encoding: EncodingKey,
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
    /// Each signer's public keys, by service name: two while its pair is rotated.
    PerService(std::collections::HashMap<String, Vec<DecodingKey>>),
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
    /// `<name>.<label>.pub` is another public key of the same service (`orders.next.pub`):
    /// either verifies, which is how a pair is rotated without refusing a call.
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
        let mut public: std::collections::HashMap<String, Vec<DecodingKey>> =
            std::collections::HashMap::new();
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
                .and_then(|n| n.split('.').next())
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
            public.entry(name.to_owned()).or_default().push(key);
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
        let keys = match &self.0.verifying {
            Verifying::Shared(key) => std::slice::from_ref(key),
            Verifying::PerService(public) => {
                let payload = token.split('.').nth(1)?;
                let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .ok()?;
                let signer: Signer = serde_json::from_slice(&json).ok()?;
                let name = if identity { signer.by? } else { signer.sub };
                public.get(&name)?.as_slice()
            }
        };
        keys.iter().find_map(|key| {
            jsonwebtoken::decode::<ServiceClaims>(token, key, validation)
                .ok()
                .map(|data| data.claims)
        })
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

/// The per-process layout a deployment mounts: under `root`, one directory per
/// service (`root/<service>/`) holding that service's private key and the public key
/// of every service, which is what [`ServiceKeys::from_dir`] reads, so no process can
/// read another's private key. The pairs themselves are kept in `root/pairs/` and
/// generated only when missing: a restart keeps the same keys. Returns each service's
/// directory.
pub fn provision_service_keys(
    root: &Path,
    services: &[&str],
) -> Result<Vec<std::path::PathBuf>, TokenError> {
    let io_err = |path: &Path, source| TokenError::Secret {
        path: path.display().to_string(),
        source,
    };
    let pairs = root.join("pairs");
    chassis_core::private_fs::create_dir(root).map_err(|e| io_err(root, e))?;
    // A pair is whole or regenerated: a lone half (a crash between the two writes, or
    // one file deleted to rotate the pair) would otherwise stop every start.
    let mut missing: Vec<&str> = Vec::new();
    for service in services {
        let files = [
            pairs.join(format!("{service}.key")),
            pairs.join(format!("{service}.pub")),
        ];
        if files.iter().all(|f| f.exists()) {
            continue;
        }
        for file in &files {
            match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(file, e));
                }
                _ => {}
            }
        }
        missing.push(service);
    }
    generate_service_keys(&pairs, &missing)?;
    let copy = |from: &Path, to: &Path| -> Result<(), TokenError> {
        let contents = std::fs::read_to_string(from).map_err(|e| io_err(from, e))?;
        // Rewritten each time, so a regenerated pair reaches every directory.
        match std::fs::remove_file(to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(to, e)),
            _ => {}
        }
        write_private(to, &contents).map_err(|e| io_err(to, e))
    };
    let mut dirs = Vec::new();
    for service in services {
        let dir = root.join(service);
        chassis_core::private_fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?;
        let key = format!("{service}.key");
        copy(&pairs.join(&key), &dir.join(&key))?;
        for other in services {
            let public = format!("{other}.pub");
            copy(&pairs.join(&public), &dir.join(&public))?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
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
