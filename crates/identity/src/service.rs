//! identity's use cases.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use chassis::auth::{Principal, Role, Tokens};
use chassis::error::Violations;
use contracts::identity::User;

use crate::domain::{Email, Name, Password};
use crate::error::IdentityError;
use crate::hashing::Hasher;
use crate::settings::Settings;
use crate::store::{InsertError, UserRecord, Users};
use crate::throttle::LoginThrottle;

/// A signed-in session: the token and who it is for.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user: User,
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
        tokens: Tokens,
        outbox: chassis::outbox::Outbox,
        settings: &Settings,
    ) -> Self {
        Self {
            users,
            tokens,
            outbox,
            hasher: Hasher::new(settings),
            throttle: LoginThrottle::new(settings.throttle),
        }
    }

    /// Forgets stale sign-in failures every minute until `shutdown`.
    pub fn spawn_sweeper(
        &self,
        shutdown: chassis::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        self.throttle.spawn_sweeper(shutdown)
    }

    pub fn outbox(&self) -> &chassis::outbox::Outbox {
        &self.outbox
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn session(&self, user: &UserRecord) -> Result<Session, IdentityError> {
        Ok(Session {
            token: self.tokens.issue(&user.id, user.role)?,
            user: public(user),
        })
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
        self.throttle.succeeded(&user.email, client, Instant::now());
        self.session(&user)
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
        self.throttle
            .check(account, client, Instant::now())
            .map_err(|retry_after_secs| IdentityError::Throttled { retry_after_secs })?;
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
                self.throttle.succeeded(&user.email, client, Instant::now());
                self.session(&user)
            }
            _ => {
                self.throttle.failed(account, client, Instant::now());
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
