//! notifications, as the composition root sees it.

use std::sync::Arc;
use std::time::Duration;

use chassis::bus::RetryPolicy;
use chassis::config::SqliteSync;
use chassis::module::{BuildError, Context, Descriptor, Parts};
use serde::Deserialize;

use crate::{DEFAULT_SENDER, MIGRATOR, MODULE, NotificationsService};

/// notifications' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where emails go: `maildir` (`.eml` files under `<data_dir>/mail`),
    /// `maildir:/some/dir`, or `smtp://[user:pass@]host:port` / `smtps://host:port`.
    pub mail_transport: String,
    /// The From of outgoing email.
    pub mail_from: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mail_transport: "maildir".to_owned(),
            mail_from: DEFAULT_SENDER.to_owned(),
        }
    }
}

const KEYS: &[&str] = &["mail_transport", "mail_from"];

/// notifications, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    settings: KEYS,
    routes: &["/api/v1/admin/notifications"],
    consumes: crate::events::topics,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    register_metrics: crate::register_metrics,
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let settings: Settings = context.settings()?;
    let config = context.config();
    let invalid = |e| BuildError::module("invalid mail configuration", e);
    let transport = crate::transport::from_config(
        &settings.mail_transport,
        &config.data_dir,
        config.sqlite_synchronous == SqliteSync::Full,
    )
    .map_err(invalid)?;
    let service = NotificationsService::new(context.store().pool().clone(), transport)
        .with_sender(&settings.mail_from)
        .map_err(invalid)?;
    Ok(Parts::new(service.clone())
        .routes(crate::router(service.clone(), context.tokens().clone()))
        .consumer(
            crate::events::CONSUMER,
            Arc::new(service.events()),
            // An order's email can arrive before its buyer's UserRegistered (another
            // module's relay): retry for longer before dead-lettering.
            RetryPolicy {
                attempts: 10,
                base: Duration::from_millis(50),
                cap: Duration::from_secs(2),
            },
        ))
}
