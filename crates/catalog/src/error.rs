use chassis::Problem;
use contracts::catalog::CatalogError;

use crate::store::StoreFailure;

/// catalog's failures on its public routes.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFailure {
    #[error("invalid input")]
    Invalid(Problem),
    #[error("invalid cursor")]
    BadCursor,
    #[error("product {0} not found")]
    NotFound(String),
    #[error("a product with SKU {0} already exists")]
    DuplicateSku(String),
    #[error("catalog store failed")]
    Store(#[from] StoreFailure),
}

impl From<sqlx::Error> for CatalogFailure {
    fn from(e: sqlx::Error) -> Self {
        CatalogFailure::Store(e.into())
    }
}

/// The one place catalog's failures become HTTP statuses.
impl From<CatalogFailure> for Problem {
    fn from(error: CatalogFailure) -> Self {
        match error {
            CatalogFailure::Invalid(problem) => problem,
            CatalogFailure::BadCursor => {
                Problem::bad_request("`cursor` is not a cursor this API returned")
            }
            CatalogFailure::NotFound(_) => Problem::not_found(error.to_string()),
            CatalogFailure::DuplicateSku(_) => Problem::conflict(error.to_string()),
            CatalogFailure::Store(_) => chassis::store::problem(&error),
        }
    }
}

chassis::impl_into_response!(CatalogFailure);

impl From<CatalogFailure> for CatalogError {
    fn from(error: CatalogFailure) -> Self {
        match error {
            CatalogFailure::NotFound(id) => CatalogError::NotFound(id),
            CatalogFailure::BadCursor => CatalogError::Invalid(error.to_string()),
            CatalogFailure::Invalid(problem) => CatalogError::Invalid(
                problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.title.clone()),
            ),
            other => CatalogError::Unavailable(other.to_string()),
        }
    }
}
