//! The cart, as the composition root sees it.

use std::sync::Arc;

use chassis::bus::RetryPolicy;
use chassis::module::{BuildError, Context, Module, Parts};
use chassis::rpc::Contract;
use contracts::cart::CartApi;
use contracts::catalog::CatalogApi;

use crate::{CartService, MIGRATOR, MODULE};

/// The cart's descriptor.
#[derive(Debug)]
pub struct Cart;

pub static DESCRIPTOR: Cart = Cart;

#[async_trait::async_trait]
impl Module for Cart {
    fn name(&self) -> &'static str {
        MODULE
    }

    fn provides(&self) -> &'static [&'static str] {
        &[MODULE]
    }

    fn calls(&self) -> &'static [&'static str] {
        &[<dyn CatalogApi as Contract>::PROVIDER]
    }

    fn routes(&self) -> &'static [&'static str] {
        &["/api/v1/cart"]
    }

    fn consumes(&self) -> Vec<String> {
        crate::events::topics()
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(<crate::ApiDoc as utoipa::OpenApi>::openapi())
    }

    async fn build(&self, context: Context<'_>) -> Result<Parts, BuildError> {
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
}
