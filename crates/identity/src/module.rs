//! identity, as the composition root sees it.

use std::sync::Arc;
use std::time::Duration;

use chassis::config::ConfigError;
use chassis::module::{BuildError, Context, Descriptor, Parts};
use contracts::identity::IdentityApi;
use serde::Deserialize;

use crate::{IdentityService, MIGRATOR, MODULE, Settings, ThrottlePolicy};

/// identity's configuration keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Keys {
    /// With `admin_password`: the admin account created on first start.
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// How long a registration or login waits for a password-hashing slot (there are
    /// as many as cores) before it is shed with 503 and Retry-After.
    pub password_hash_wait_ms: u64,
    /// Failed sign-ins (per account, and per client IP) before the login throttle
    /// makes further attempts wait.
    pub login_free_attempts: u32,
    /// The login throttle's longest wait; waits double from 1 s up to it.
    pub login_backoff_max_secs: u64,
}

impl Default for Keys {
    fn default() -> Self {
        let service = Settings::default();
        Self {
            admin_email: None,
            admin_password: None,
            refresh_token_ttl_secs: service.refresh_ttl.as_secs(),
            password_hash_wait_ms: u64::try_from(service.hash_wait.as_millis()).unwrap_or(u64::MAX),
            login_free_attempts: service.throttle.free_attempts,
            login_backoff_max_secs: service.throttle.max_backoff.as_secs(),
        }
    }
}

const KEYS: &[&str] = &[
    "admin_email",
    "admin_password",
    "refresh_token_ttl_secs",
    "password_hash_wait_ms",
    "login_free_attempts",
    "login_backoff_max_secs",
];

impl Keys {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return invalid(
                "admin_email",
                "admin_email and admin_password must be set together",
            );
        }
        if self.refresh_token_ttl_secs == 0 {
            return invalid("refresh_token_ttl_secs", "must be positive");
        }
        if self.password_hash_wait_ms == 0 {
            return invalid("password_hash_wait_ms", "must be positive");
        }
        if self.login_backoff_max_secs == 0 {
            return invalid("login_backoff_max_secs", "must be positive");
        }
        Ok(())
    }

    /// The service's settings these keys make.
    fn service(&self) -> Settings {
        Settings {
            hash_wait: Duration::from_millis(self.password_hash_wait_ms),
            throttle: ThrottlePolicy {
                free_attempts: self.login_free_attempts,
                max_backoff: Duration::from_secs(self.login_backoff_max_secs),
                ..ThrottlePolicy::default()
            },
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            ..Settings::default()
        }
    }
}

/// identity, as the composition root sees it.
pub static DESCRIPTOR: Descriptor = Descriptor {
    settings: KEYS,
    check: |config| config.section::<Keys>()?.check(),
    provides: &[MODULE],
    routes: &["/api/v1/auth", "/api/v1/me"],
    publishes: contracts::identity::EVENTS,
    openapi: Some(<crate::ApiDoc as utoipa::OpenApi>::openapi),
    register_metrics: crate::register_metrics,
    ..Descriptor::new(MODULE, &MIGRATOR, build)
};

fn build(context: &Context<'_>) -> Result<Parts, BuildError> {
    let keys: Keys = context.settings()?;
    let pool = context.store().pool();
    let service = IdentityService::new(
        Arc::new(crate::store::SqlUsers::new(pool.clone())),
        Arc::new(crate::store::SqlSessions::new(pool.clone())),
        pool.clone(),
        context.tokens().clone(),
        context.outbox(),
        &keys.service(),
    );
    let sweeper = service.clone();
    let api: Arc<dyn IdentityApi> = Arc::new(service.clone());
    let mut parts = Parts::new(service.clone())
        .routes(crate::router(service.clone()))
        .provide(api)
        .outbox(service.outbox().clone())
        .worker(move |shutdown| sweeper.spawn_sweeper(shutdown));
    if let (Some(email), Some(password)) = (keys.admin_email, keys.admin_password) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The sign-in protection and session settings are checked at start.
    #[test]
    fn sign_in_protection_settings_are_checked() {
        assert!((DESCRIPTOR.check)(&chassis::config::Config::default()).is_ok());
        for key in [
            "password_hash_wait_ms",
            "login_backoff_max_secs",
            "refresh_token_ttl_secs",
        ] {
            let mut config = chassis::config::Config::default();
            config.set(key, 0);
            let err = (DESCRIPTOR.check)(&config).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let mut config = chassis::config::Config::default();
        config.set("admin_email", "admin@example.com");
        let err = (DESCRIPTOR.check)(&config).unwrap_err().to_string();
        assert!(err.contains("admin_password"), "{err}");
    }
}
