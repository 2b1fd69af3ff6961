use chassis::{FieldError, Problem};
use contracts::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum CartError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("product {0} not found")]
    UnknownProduct(String),
    #[error("a cart line holds at most 100 units")]
    LineFull,
    #[error("a cart holds at most 100 distinct products")]
    CartFull,
    #[error("the catalog could not answer")]
    Catalog(#[source] CatalogError),
    #[error("cart store failed")]
    Store(#[from] sqlx::Error),
}

impl From<CatalogError> for CartError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound(id) => CartError::UnknownProduct(id),
            other => CartError::Catalog(other),
        }
    }
}

/// The one place cart's failures become HTTP statuses.
impl From<CartError> for Problem {
    fn from(error: CartError) -> Self {
        match error {
            CartError::Invalid(errors) => Problem::validation(errors),
            CartError::UnknownProduct(_) => Problem::not_found(error.to_string()),
            CartError::LineFull => Problem::validation(vec![FieldError::new(
                "quantity",
                "the line would exceed 100 units",
            )]),
            CartError::CartFull => Problem::validation(vec![FieldError::new(
                "product_id",
                "the cart already holds 100 distinct products",
            )]),
            // Browsing and carts should say plainly that a dependency is down.
            CartError::Catalog(_) => {
                tracing::warn!(error = %error, "catalog unavailable");
                Problem::unavailable("the catalog is unavailable; try again shortly")
            }
            CartError::Store(_) => chassis::store::problem(&error),
        }
    }
}

chassis::impl_into_response!(CartError);

/// The contract's side: refusals explained, everything else unavailable.
impl From<CartError> for contracts::cart::CartError {
    fn from(error: CartError) -> Self {
        match error {
            CartError::Invalid(errors) => contracts::cart::CartError::Refused(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            CartError::UnknownProduct(_) | CartError::LineFull | CartError::CartFull => {
                contracts::cart::CartError::Refused(error.to_string())
            }
            CartError::Catalog(_) | CartError::Store(_) => {
                contracts::cart::CartError::Unavailable(error.to_string())
            }
        }
    }
}
