use chassis::Problem;

/// analytics' failures on its public routes.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("analytics store failed")]
    Store(#[from] sqlx::Error),
}

/// The one place analytics' failures become HTTP statuses.
impl From<AnalyticsError> for Problem {
    fn from(error: AnalyticsError) -> Self {
        match error {
            AnalyticsError::Store(_) => chassis::store::problem(&error),
        }
    }
}

chassis::impl_into_response!(AnalyticsError);
