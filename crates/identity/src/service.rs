//! identity's use cases.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chassis::auth::{Principal, Role, Tokens};
use chassis::error::Violations;
use contracts::identity::{AccountError, IdentityApi, SignedIn, User};

use crate::domain::{Email, Name, Password};
use crate::error::IdentityError;
use crate::hashing::Hasher;
use crate::settings::Settings;
use crate::store::{InsertError, RefreshRecord, Rotation, Sessions, UserRecord, Users};
use crate::throttle::{LoginThrottle, Verdict};

/// A signed-in session: the short-lived access token, the refresh token that renews
/// it, and who it is for.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub refresh_token: String,
    /// Seconds until `token` expires.
    pub expires_in: u64,
    pub user: User,
}

/// How often the sweeper runs (throttle entries), and how many of its rounds pass
/// between purges of expired refresh tokens.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const PURGE_EVERY_ROUNDS: u32 = 60;

/// A new refresh token (256 random bits, base64url) and the hash it is stored as.
fn new_refresh_token() -> (String, String) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = token_hash(&token);
    (token, hash)
}

/// Only this is stored: a leaked table does not hand out sessions. A plain SHA-256
/// suffices for 256 random bits (no guessing to slow down).
fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// What `ensure_admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOutcome {
    Created,
    AlreadyAdmin,
}

#[derive(Clone)]
pub struct IdentityService {
    users: Arc<dyn Users>,
    tokens: Tokens,
    outbox: chassis::outbox::Outbox,
    hasher: Hasher,
    throttle: LoginThrottle,
    sessions: Arc<dyn Sessions>,
    refresh_ttl: Duration,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService").finish_non_exhaustive()
    }
}

fn public(user: &UserRecord) -> User {
    User {
        id: user.id.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role.as_str().to_owned(),
    }
}

/// A hash to verify against when the email is unknown, so a login for a missing
/// account costs the same time as one with a wrong password.
fn dummy_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(b"not-a-real-password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
    .clone()
}

impl IdentityService {
    pub fn new(
        users: Arc<dyn Users>,
        sessions: Arc<dyn Sessions>,
        throttle_store: sqlx::AnyPool,
        tokens: Tokens,
        outbox: chassis::outbox::Outbox,
        settings: &Settings,
    ) -> Self {
        Self {
            users,
            tokens,
            outbox,
            hasher: Hasher::new(settings),
            throttle: LoginThrottle::new(settings.throttle, throttle_store),
            sessions,
            refresh_ttl: settings.refresh_ttl,
        }
    }

    /// Until `shutdown`: forgets stale sign-in failures every minute, and deletes
    /// expired refresh tokens every hour.
    pub fn spawn_sweeper(
        &self,
        shutdown: chassis::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            let mut round: u32 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = service.throttle.sweep(chassis::time::now_micros()).await {
                            tracing::warn!(error = %e, "sweeping the login throttle failed");
                        }
                        if round % PURGE_EVERY_ROUNDS == 0 {
                            let now = chassis::time::now_micros();
                            if let Err(e) = service.sessions.purge_expired(now).await {
                                tracing::warn!(error = %e, "purging expired refresh tokens failed");
                            }
                        }
                        round = round.wrapping_add(1);
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        })
    }

    pub fn outbox(&self) -> &chassis::outbox::Outbox {
        &self.outbox
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A new session (refresh-token family) for `user`.
    async fn session(&self, user: &UserRecord) -> Result<Session, IdentityError> {
        let family_id = chassis::id::new_id();
        let (refresh_token, token_hash) = new_refresh_token();
        let now = chassis::time::now_micros();
        self.sessions
            .insert(&RefreshRecord {
                token_hash,
                family_id: family_id.clone(),
                user_id: user.id.clone(),
                created_at: now,
                expires_at: now.saturating_add(micros(self.refresh_ttl)),
            })
            .await?;
        self.tokens_for(user, &family_id, refresh_token)
    }

    /// The access token of session `family_id` for `user` as it is now (its current
    /// role), with `refresh_token`.
    fn tokens_for(
        &self,
        user: &UserRecord,
        family_id: &str,
        refresh_token: String,
    ) -> Result<Session, IdentityError> {
        Ok(Session {
            token: self
                .tokens
                .issue_for_session(&user.id, user.role, Some(family_id))?,
            refresh_token,
            expires_in: self.tokens.ttl_secs(),
            user: public(user),
        })
    }

    /// Exchanges a live refresh token for a new pair. A used token is dead, and
    /// presenting one again revokes its whole session: one of its two holders is
    /// not who the session was issued to. The new access token carries the user's
    /// current role; a deleted user's session ends.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, IdentityError> {
        // Ours are 43 characters; anything far longer is not worth a hash.
        if refresh_token.is_empty() || refresh_token.len() > 128 {
            return Err(IdentityError::InvalidRefreshToken);
        }
        let (next, next_hash) = new_refresh_token();
        let now = chassis::time::now_micros();
        let rotation = self
            .sessions
            .rotate(
                &token_hash(refresh_token),
                &next_hash,
                now.saturating_add(micros(self.refresh_ttl)),
                now,
            )
            .await?;
        match rotation {
            Rotation::Rotated { user_id, family_id } => {
                let Some(user) = self.users.by_id(&user_id).await? else {
                    self.sessions.revoke_family(&family_id, now).await?;
                    return Err(IdentityError::InvalidRefreshToken);
                };
                self.tokens_for(&user, &family_id, next)
            }
            Rotation::Reused { family_id } => {
                tracing::warn!(session = %family_id, "a used refresh token came back: its session is revoked");
                Err(IdentityError::InvalidRefreshToken)
            }
            Rotation::Dead => Err(IdentityError::InvalidRefreshToken),
        }
    }

    /// Ends the caller's session: its refresh tokens are revoked. Its access token
    /// lives out its (short) lifetime.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, principal: &Principal) -> Result<(), IdentityError> {
        if let Some(session) = &principal.session_id {
            self.sessions
                .revoke_family(session, chassis::time::now_micros())
                .await?;
        }
        Ok(())
    }

    /// Changes the caller's password, given the current one, and ends every other
    /// session of the account. Wrong current passwords count as failed sign-ins.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let mut v = Violations::new();
        let Some(new) = v.check("new_password", Password::parse(new)) else {
            return Err(IdentityError::Invalid(
                v.finish().err().map(|p| p.errors).unwrap_or_default(),
            ));
        };
        let user = self
            .users
            .by_id(&principal.user_id)
            .await?
            .ok_or(IdentityError::UnknownUser)?;
        self.throttle_check(Some(&user.email), client).await?;
        let ok = current.chars().count() <= crate::domain::PASSWORD_MAX
            && self
                .hasher
                .verify(current.to_owned(), user.password_hash.clone())
                .await?;
        if !ok {
            self.note_failure(Some(&user.email), client).await;
            return Err(IdentityError::WrongPassword);
        }
        let hash = self.hasher.hash(new).await?;
        self.users.set_password(&user.id, &hash).await?;
        self.sessions
            .revoke_user(
                &user.id,
                principal.session_id.as_deref(),
                chassis::time::now_micros(),
            )
            .await?;
        tracing::info!(user_id = %user.id, "password changed; other sessions revoked");
        Ok(())
    }

    fn parse_account(
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<(Email, Password, Name), IdentityError> {
        let mut v = Violations::new();
        let email = v.check("email", Email::parse(email));
        let password = v.check("password", Password::parse(password));
        let name = v.check("name", Name::parse(name));
        match (email, password, name) {
            (Some(e), Some(p), Some(n)) => Ok((e, p, n)),
            _ => Err(IdentityError::Invalid(
                v.finish().err().map(|p| p.errors).unwrap_or_default(),
            )),
        }
    }

    async fn create(
        &self,
        email: Email,
        password: Password,
        name: Name,
        role: Role,
    ) -> Result<UserRecord, IdentityError> {
        let record = UserRecord {
            id: chassis::id::new_id(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            password_hash: self.hasher.hash(password).await?,
            role,
            created_at: chassis::time::now_micros(),
        };
        match self.users.insert(&record).await {
            Ok(()) => {
                self.outbox.wake();
                Ok(record)
            }
            Err(InsertError::Duplicate) => Err(IdentityError::EmailTaken),
            Err(InsertError::Store(e)) => Err(IdentityError::Store(e)),
            Err(InsertError::Outbox(e)) => Err(IdentityError::Outbox(e)),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<Session, IdentityError> {
        let (email, password, name) = Self::parse_account(email, password, name)?;
        // Cheap check first so a taken email does not cost a hash; the unique index
        // still decides races.
        if self.users.by_email(email.as_str()).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        let user = self.create(email, password, name, Role::Customer).await?;
        tracing::info!(user_id = %user.id, "user registered");
        // Whoever created the account is a known client of it.
        self.note_success(&user.email, client).await;
        self.session(&user).await
    }

    /// Records a successful sign-in (or registration) with the throttle. Best effort:
    /// the account is already created or the password checked, so a store failure here
    /// must not turn that into an error (the client would retry a registration that
    /// was done); it is logged, and the account's old failures stay until forgotten.
    async fn note_success(&self, account: &str, client: Option<IpAddr>) {
        let now = chassis::time::now_micros();
        if let Err(e) = self.throttle.succeeded(account, client, now).await {
            tracing::warn!(error = %e, "recording a successful sign-in with the login throttle failed");
        }
    }

    /// Records a failed password check with the throttle. Best effort: the answer is
    /// still the wrong-password one; a store failure is logged (the guess is then not
    /// counted, as it would not be while the store is down anyway).
    async fn note_failure(&self, account: Option<&str>, client: Option<IpAddr>) {
        let now = chassis::time::now_micros();
        if let Err(e) = self.throttle.failed(account, client, now).await {
            tracing::warn!(error = %e, "recording a failed sign-in with the login throttle failed");
        }
    }

    /// `Throttled` when a sign-in to `account` from `client` must wait (see
    /// `throttle`).
    async fn throttle_check(
        &self,
        account: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        match self
            .throttle
            .check(account, client, chassis::time::now_micros())
            .await?
        {
            Verdict::Go => Ok(()),
            Verdict::Wait(retry_after_secs) => Err(IdentityError::Throttled { retry_after_secs }),
        }
    }

    /// Signs in, under the failed-login throttle (see `throttle`): a throttled
    /// attempt is refused before its password is checked.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Session, IdentityError> {
        // Anything that cannot be an account is simply a failed login: no hint of
        // which half was wrong. It is still counted against the client.
        let email = Email::parse(email).ok();
        let account = email.as_ref().map(Email::as_str);
        self.throttle_check(account, client).await?;
        // A password no account can have is refused before it costs a hash.
        let too_long = password.chars().count() > crate::domain::PASSWORD_MAX;
        let found = match &email {
            Some(email) if !too_long => self.users.by_email(email.as_str()).await?,
            _ => None,
        };
        let hash = found
            .as_ref()
            .map_or_else(dummy_hash, |u| u.password_hash.clone());
        let ok = !too_long && self.hasher.verify(password.to_owned(), hash).await?;
        match found {
            Some(user) if ok => {
                self.note_success(&user.email, client).await;
                self.session(&user).await
            }
            _ => {
                self.note_failure(account, client).await;
                tracing::info!(?client, "failed sign-in");
                Err(IdentityError::InvalidCredentials)
            }
        }
    }

    pub async fn me(&self, principal: &Principal) -> Result<User, IdentityError> {
        self.users
            .by_id(&principal.user_id)
            .await?
            .map(|u| public(&u))
            .ok_or(IdentityError::UnknownUser)
    }

    /// Creates the admin account when no account has that email; an existing admin
    /// with it is left as it is. An existing account of any other role is refused,
    /// never promoted: whoever registered the address first would otherwise become
    /// admin with a password of their choosing.
    pub async fn ensure_admin(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<AdminOutcome, IdentityError> {
        let (email, password, name) = Self::parse_account(email, password, name)?;
        if let Some(existing) = self.users.by_email(email.as_str()).await? {
            return Self::existing_admin(&existing);
        }
        match self
            .create(email.clone(), password, name, Role::Admin)
            .await
        {
            Ok(user) => {
                tracing::info!(user_id = %user.id, "admin created");
                Ok(AdminOutcome::Created)
            }
            // Someone took the address between the check and the insert: another
            // process bootstrapping the same admin, or a registration. Only the
            // first is fine.
            Err(IdentityError::EmailTaken) => match self.users.by_email(email.as_str()).await? {
                Some(existing) => Self::existing_admin(&existing),
                None => Err(IdentityError::EmailTaken),
            },
            Err(e) => Err(e),
        }
    }

    fn existing_admin(existing: &UserRecord) -> Result<AdminOutcome, IdentityError> {
        if existing.role == Role::Admin {
            Ok(AdminOutcome::AlreadyAdmin)
        } else {
            Err(IdentityError::AdminEmailTaken(existing.email.clone()))
        }
    }
}

impl IdentityService {
    /// A session as the storefront keeps it.
    fn signed_in(&self, session: Session) -> SignedIn {
        SignedIn {
            token: session.token,
            expires_in: session.expires_in,
            refresh_token: session.refresh_token,
            refresh_expires_in: self.refresh_ttl.as_secs(),
            user: session.user,
        }
    }
}

impl From<IdentityError> for AccountError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Invalid(errors) => AccountError::Invalid(errors),
            IdentityError::EmailTaken => AccountError::EmailTaken,
            IdentityError::InvalidCredentials => AccountError::InvalidCredentials,
            IdentityError::Throttled { retry_after_secs } => {
                AccountError::Throttled { retry_after_secs }
            }
            other => AccountError::Unavailable(other.to_string()),
        }
    }
}

/// The storefront's sign-up, sign-in and sign-out: the public routes' use cases.
#[async_trait::async_trait]
impl IdentityApi for IdentityService {
    async fn sign_up(
        &self,
        email: String,
        password: String,
        name: String,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, AccountError> {
        let session = self.register(&email, &password, &name, client).await?;
        Ok(self.signed_in(session))
    }

    async fn sign_in(
        &self,
        email: String,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, AccountError> {
        let session = self.login(&email, &password, client).await?;
        Ok(self.signed_in(session))
    }

    async fn refresh(&self, refresh_token: String) -> Result<SignedIn, AccountError> {
        match IdentityService::refresh(self, &refresh_token).await {
            Ok(session) => Ok(self.signed_in(session)),
            Err(IdentityError::InvalidRefreshToken) => Err(AccountError::InvalidCredentials),
            Err(other) => Err(other.into()),
        }
    }

    async fn sign_out(
        &self,
        user_id: String,
        session_id: Option<String>,
    ) -> Result<(), AccountError> {
        let principal = Principal {
            user_id,
            role: Role::Customer,
            session_id,
        };
        Ok(self.logout(&principal).await?)
    }
}
