use chassis::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("invalid order")]
    Invalid(Vec<FieldError>),
    #[error("`cursor` is not a cursor this API returned")]
    BadCursor,
    #[error("order {0} not found")]
    NotFound(String),
    #[error("{0}")]
    NotCancellable(String),
    #[error("the Idempotency-Key was used with a different request")]
    KeyMismatch,
    #[error("a request with this Idempotency-Key is still in progress")]
    KeyInProgress,
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    #[error("orders store failed")]
    Store(#[from] sqlx::Error),
    #[error("cannot record the order")]
    Append(#[from] crate::store::AppendError),
}

/// The one place orders' failures become HTTP statuses.
impl From<OrdersError> for Problem {
    fn from(error: OrdersError) -> Self {
        match error {
            OrdersError::Invalid(errors) => Problem::validation(errors),
            // Like every list's: a cursor is opaque, so a foreign one is malformed (400).
            OrdersError::BadCursor => Problem::bad_request(error.to_string()),
            OrdersError::NotFound(_) => Problem::not_found(error.to_string()),
            OrdersError::NotCancellable(_) | OrdersError::KeyInProgress => {
                Problem::conflict(error.to_string())
            }
            OrdersError::KeyMismatch => Problem::validation(vec![FieldError::new(
                "Idempotency-Key",
                "was already used with a different request body",
            )]),
            OrdersError::Unavailable(_) => {
                tracing::warn!(error = %error, "dependency unavailable");
                Problem::unavailable("a service the order needs is unavailable; try again shortly")
            }
            OrdersError::Store(_) | OrdersError::Append(_) => chassis::store::problem(&error),
        }
    }
}

chassis::impl_into_response!(OrdersError);
