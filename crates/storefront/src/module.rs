//! The storefront, as the composition root sees it.

use chassis::module::{BuildError, Context, Descriptor, Parts};
use chassis::rpc::Contract;
use contracts::catalog::CatalogApi;

use crate::http::Shop;
use crate::{MIGRATOR, MODULE};

/// The storefront, as the composition root sees it: HTML pages at `/` and below its
/// page prefixes (never under `/api`), calling the catalog's contract.
pub static DESCRIPTOR: Descriptor = Descriptor {
    calls: &[<dyn CatalogApi as Contract>::PROVIDER],
    routes: crate::http::PREFIXES,
    openapi: Some(crate::openapi::document),
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let shop = Shop {
        catalog: context.call::<dyn CatalogApi>()?,
    };
    Ok(Parts::new(shop.clone()).routes(crate::http::router(shop)))
}
