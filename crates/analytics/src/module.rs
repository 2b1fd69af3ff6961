//! analytics, as the composition root sees it.

use std::sync::Arc;

use chassis::bus::RetryPolicy;
use chassis::module::{Context, Descriptor, Parts};

use crate::{AnalyticsService, MIGRATOR, MODULE};

/// analytics, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    routes: &["/api/v1/admin/analytics"],
    consumes: crate::events::topics,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    ..Descriptor::new(MODULE, &MIGRATOR, |context| Ok(build(context)))
};

fn build(context: &Context<'_>) -> Parts {
    let service = AnalyticsService::new(context.store().pool().clone());
    Parts::new(service.clone())
        .routes(crate::router(service, context.tokens().clone()))
        .consumer(
            crate::events::CONSUMER,
            Arc::new(crate::events::AnalyticsEvents),
            RetryPolicy::default(),
        )
}
