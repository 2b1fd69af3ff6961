use chassis::Problem;

/// notifications' failures on its public routes.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    #[error("invalid input")]
    Invalid(Problem),
    #[error("invalid cursor")]
    BadCursor,
    #[error("notifications store failed")]
    Store(#[from] sqlx::Error),
}

/// The one place notifications' failures become HTTP statuses.
impl From<NotificationsError> for Problem {
    fn from(error: NotificationsError) -> Self {
        match error {
            NotificationsError::Invalid(problem) => problem,
            NotificationsError::BadCursor => {
                Problem::bad_request("`cursor` is not a cursor this API returned")
            }
            NotificationsError::Store(_) => chassis::store::problem(&error),
        }
    }
}

chassis::impl_into_response!(NotificationsError);
