//! identity, as the composition root sees it.

use std::sync::Arc;

use chassis::config::{Config, ConfigError};
use chassis::module::{BuildError, Context, Module, Parts};
use serde::Deserialize;

use crate::{IdentityService, MIGRATOR, MODULE};

/// identity's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// With `admin_password`: the admin account created on first start.
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
}

const KEYS: &[&str] = &["admin_email", "admin_password"];

impl Settings {
    fn check(&self) -> Result<(), ConfigError> {
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return Err(ConfigError::Invalid {
                key: "admin_email",
                message: "admin_email and admin_password must be set together".into(),
            });
        }
        Ok(())
    }
}

/// identity's descriptor.
#[derive(Debug)]
pub struct Identity;

pub static DESCRIPTOR: Identity = Identity;

#[async_trait::async_trait]
impl Module for Identity {
    fn name(&self) -> &'static str {
        MODULE
    }

    fn settings(&self) -> &'static [&'static str] {
        KEYS
    }

    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        config.section::<Settings>()?.check()
    }

    fn routes(&self) -> &'static [&'static str] {
        &["/api/v1/auth", "/api/v1/me"]
    }

    fn publishes(&self) -> &'static [&'static str] {
        contracts::identity::EVENTS
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(<crate::ApiDoc as utoipa::OpenApi>::openapi())
    }

    async fn build(&self, context: Context<'_>) -> Result<Parts, BuildError> {
        let settings: Settings = context.settings()?;
        let service = IdentityService::new(
            Arc::new(crate::store::SqlUsers::new(context.store().pool().clone())),
            context.tokens().clone(),
            context.outbox(),
        );
        let mut parts = Parts::new(service.clone())
            .routes(crate::router(service.clone()))
            .outbox(service.outbox().clone());
        if let (Some(email), Some(password)) = (settings.admin_email, settings.admin_password) {
            parts = parts.bootstrap(move || {
                Box::pin(async move {
                    let outcome = service
                        .ensure_admin(&email, &password, "Administrator")
                        .await
                        .map_err(|e| BuildError::module("cannot bootstrap the admin account", e))?;
                    tracing::info!(?outcome, email = %email, "admin bootstrap");
                    Ok(())
                })
            });
        }
        Ok(parts)
    }
}
