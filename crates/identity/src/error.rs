use chassis::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// The admin bootstrap's email belongs to an account that is not an admin.
    #[error(
        "an account with the email {0} already exists and is not an admin; bazaar never \
         promotes an existing account to admin. Choose another admin email, or remove \
         that account if it is yours"
    )]
    AdminEmailTaken(String),
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many failed sign-ins for this account or from this client.
    #[error("too many failed sign-ins; wait before trying again")]
    Throttled { retry_after_secs: u64 },
    /// Unknown, expired, revoked or already used.
    #[error("invalid, expired or revoked refresh token")]
    InvalidRefreshToken,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("user not found")]
    UnknownUser,
    #[error("identity store failed")]
    Store(#[from] sqlx::Error),
    /// Every password-hashing slot stayed busy for the whole wait.
    #[error("too many sign-ins and registrations at once; retry shortly")]
    Busy { retry_after_secs: u64 },
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("token signing failed")]
    Token(#[from] chassis::auth::TokenError),
    #[error("cannot record the registration event")]
    Outbox(#[from] chassis::outbox::OutboxError),
}

/// The one place identity's failures become HTTP statuses.
impl From<IdentityError> for Problem {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Invalid(errors) => Problem::validation(errors),
            IdentityError::EmailTaken | IdentityError::AdminEmailTaken(_) => {
                Problem::conflict(error.to_string())
            }
            IdentityError::InvalidCredentials | IdentityError::InvalidRefreshToken => {
                Problem::unauthorized(error.to_string())
            }
            IdentityError::WrongPassword => Problem::forbidden(error.to_string()),
            // A token for a deleted account is as good as no token.
            IdentityError::UnknownUser => {
                Problem::unauthorized("the token's user no longer exists")
            }
            IdentityError::Throttled { retry_after_secs } => {
                Problem::too_many_requests(retry_after_secs).with_detail(error.to_string())
            }
            IdentityError::Busy { retry_after_secs } => {
                Problem::unavailable(error.to_string()).with_retry_after(retry_after_secs)
            }
            IdentityError::Store(_) | IdentityError::Outbox(_) => chassis::store::problem(&error),
            IdentityError::Hashing(_) | IdentityError::Token(_) => Problem::internal(&error),
        }
    }
}

chassis::impl_into_response!(IdentityError);
