//! The cart, as the composition root sees it.

use std::sync::Arc;

use chassis::bus::RetryPolicy;
use chassis::module::{BuildError, Context, Descriptor, Parts};
use chassis::rpc::Contract;
use contracts::cart::CartApi;
use contracts::catalog::CatalogApi;

use crate::{CartService, MIGRATOR, MODULE};

/// The cart, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    provides: &[MODULE],
    calls: &[<dyn CatalogApi as Contract>::PROVIDER],
    routes: &["/api/v1/cart"],
    consumes: crate::events::topics,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let service = CartService::new(
        Arc::new(crate::store::SqlCartItems::new(
            context.store().pool().clone(),
        )),
        context.call::<dyn CatalogApi>()?,
    );
    let api: Arc<dyn CartApi> = Arc::new(service.clone());
    Ok(Parts::new(service.clone())
        .routes(crate::router(service, context.tokens().clone()))
        .provide(api)
        .consumer(
            crate::events::CONSUMER,
            Arc::new(crate::events::CartEvents),
            RetryPolicy::default(),
        ))
}
