//! analytics, as the composition root sees it.

use std::sync::Arc;

use chassis::bus::RetryPolicy;
use chassis::module::{BuildError, Context, Module, Parts};

use crate::{AnalyticsService, MIGRATOR, MODULE};

/// analytics' descriptor.
#[derive(Debug)]
pub struct Analytics;

pub static DESCRIPTOR: Analytics = Analytics;

#[async_trait::async_trait]
impl Module for Analytics {
    fn name(&self) -> &'static str {
        MODULE
    }

    fn routes(&self) -> &'static [&'static str] {
        &["/api/v1/admin/analytics"]
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
        let service = AnalyticsService::new(context.store().pool().clone());
        Ok(Parts::new(service.clone())
            .routes(crate::router(service, context.tokens().clone()))
            .consumer(
                crate::events::CONSUMER,
                Arc::new(crate::events::AnalyticsEvents),
                RetryPolicy::default(),
            ))
    }
}
