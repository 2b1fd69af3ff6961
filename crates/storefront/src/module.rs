//! The storefront, as the composition root sees it.

use chassis::module::{BuildError, Context, Descriptor, Parts};
use chassis::rpc::Contract;
use contracts::cart::CartApi;
use contracts::catalog::CatalogApi;
use contracts::identity::IdentityApi;
use contracts::orders::OrdersApi;

use crate::http::Shop;
use crate::{MIGRATOR, MODULE};

/// The storefront, as the composition root sees it: HTML pages at `/` and below its
/// page prefixes (never under `/api`), calling the identity, catalog, cart and orders contracts.
pub static DESCRIPTOR: Descriptor = Descriptor {
    calls: &[
        <dyn IdentityApi as Contract>::PROVIDER,
        <dyn CatalogApi as Contract>::PROVIDER,
        <dyn CartApi as Contract>::PROVIDER,
        <dyn OrdersApi as Contract>::PROVIDER,
    ],
    routes: crate::http::PREFIXES,
    openapi: Some(crate::openapi::document),
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let shop = Shop {
        catalog: context.call::<dyn CatalogApi>()?,
        cart: context.call::<dyn CartApi>()?,
        identity: context.call::<dyn IdentityApi>()?,
        orders: context.call::<dyn OrdersApi>()?,
        tokens: context.tokens().clone(),
    };
    Ok(Parts::new(shop.clone()).routes(crate::http::router(shop)))
}
