//! The identity module's contract: users as others see them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user account as the public API shows it. Credentials never leave identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `customer` or `admin`.
    pub role: String,
}

/// A new account exists. Carries what notifications need to address the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
}
crate::event!(UserRegistered, "identity", "UserRegistered", v 1, |e| e.user_id);

/// The events this module publishes (its descriptor's `publishes`).
pub const EVENTS: &[&str] = &[<UserRegistered as chassis_core::events::DomainEvent>::TYPE];

/// A signed-in session, as the storefront keeps it (in the shopper's cookies): the
/// access token, and the refresh token that renews it once it has expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedIn {
    pub token: String,
    /// Seconds until `token` expires.
    pub expires_in: u64,
    /// Single use: [`IdentityApi::refresh`] trades it for a new pair.
    pub refresh_token: String,
    /// Seconds until `refresh_token` expires.
    pub refresh_expires_in: u64,
    pub user: User,
}

/// Why an account could not be created or signed in to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AccountError {
    /// Fields that are not acceptable (`email`, `password`, `name`), each explained.
    #[error("invalid input")]
    Invalid(Vec<chassis_core::validation::FieldError>),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// No hint of which half was wrong.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many failed sign-ins for this account or from this client.
    #[error("too many failed sign-ins; wait {retry_after_secs} s before trying again")]
    Throttled { retry_after_secs: u64 },
    /// Identity could not answer (busy hashing, its store, or unreachable).
    #[error("identity unavailable: {0}")]
    Unavailable(String),
}

chassis_core::rpc! {
    /// What the storefront may ask identity: accounts and sessions for shoppers who
    /// sign in through its forms rather than the API.
    pub trait IdentityApi as "identity" {
        client IdentityClient;
        handlers identity_handlers;
        // A retry after a lost answer would create the account twice (the second
        // try refused as taken), or present a used refresh token, which revokes the
        // session as stolen.
        once [sign_up, refresh];

        /// Creates a customer account and signs it in. `client` is the shopper's
        /// address, for the sign-in throttle.
        async fn sign_up(
            &self,
            email: String,
            password: String,
            name: String,
            client: Option<std::net::IpAddr>,
        ) -> Result<SignedIn, AccountError>;

        /// Signs in, under the failed-sign-in throttle.
        async fn sign_in(
            &self,
            email: String,
            password: String,
            client: Option<std::net::IpAddr>,
        ) -> Result<SignedIn, AccountError>;

        /// Trades a live refresh token for a new pair (the API's refresh: a token used
        /// twice revokes its session). `InvalidCredentials` when it is not live.
        async fn refresh(&self, refresh_token: String) -> Result<SignedIn, AccountError>;

        /// Ends the session `session_id` of `user_id` (its token's `sid`). Idempotent.
        async fn sign_out(
            &self,
            user_id: String,
            session_id: Option<String>,
        ) -> Result<(), AccountError>;
    }
}

impl chassis_core::rpc::RemoteError for AccountError {
    fn from_failure(failure: chassis_core::rpc::RpcFailure) -> Self {
        AccountError::Unavailable(failure.to_string())
    }

    fn is_transient(&self) -> bool {
        matches!(self, AccountError::Unavailable(_))
    }
}
