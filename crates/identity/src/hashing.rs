//! Password hashing (argon2id) behind a bound: at most one hash per slot at once,
//! and work that cannot get a slot within the wait is shed rather than queued. Each
//! hash holds 19 MiB and a core for tens of milliseconds; unbounded, a login flood
//! fills the blocking pool (512 threads) and the process's memory.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::IdentityError;
use crate::settings::Settings;

/// Hashes being computed now.
const IN_FLIGHT: &str = "identity_password_hashes_in_flight";
/// Hashing work shed because no slot came free within the wait.
const SHED: &str = "identity_password_hashes_shed_total";

/// The bounded argon2id hasher.
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    slots: Arc<Semaphore>,
    wait: Duration,
}

/// Keeps the in-flight gauge right however the hash ends (panics included).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// The hashing metrics, at zero from the start.
pub fn register_metrics() {
    metrics::describe_gauge!(IN_FLIGHT, "Password hashes (argon2id) being computed");
    metrics::describe_counter!(
        SHED,
        "Registrations and logins shed with 503 because no hashing slot came free in time"
    );
    metrics::describe_counter!(
        crate::throttle::THROTTLED,
        "Sign-ins refused with 429 by the failed-login throttle"
    );
    metrics::gauge!(IN_FLIGHT).set(0.0);
    chassis::metrics::zero_counter(SHED, &[]);
    chassis::metrics::zero_counter(crate::throttle::THROTTLED, &[]);
}

impl Hasher {
    pub(crate) fn new(settings: &Settings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.hash_concurrency.max(1))),
            wait: settings.hash_wait,
        }
    }

    /// Runs `work` on the blocking pool once a slot is free, or sheds it with
    /// [`IdentityError::Busy`] after the wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        let busy = || {
            metrics::counter!(SHED).increment(1);
            IdentityError::Busy {
                retry_after_secs: self.wait.as_secs().max(1),
            }
        };
        let slot = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| busy())?
            // The semaphore is never closed.
            .map_err(|_| busy())?;
        // The slot moves into the blocking task: a client that hangs up does not free
        // it while its hash is still being computed.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _in_flight = InFlight::start();
            work()
        })
        .await
        .map_err(|e| IdentityError::Hashing(e.to_string()))?
    }

    /// argon2id with the crate's defaults (the OWASP-recommended m=19 MiB, t=2, p=1).
    pub(crate) async fn hash(&self, password: Password) -> Result<String, IdentityError> {
        self.run(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            Argon2::default()
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| IdentityError::Hashing(e.to_string()))
        })
        .await
    }

    pub(crate) async fn verify(
        &self,
        password: String,
        hash: String,
    ) -> Result<bool, IdentityError> {
        self.run(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|e| IdentityError::Hashing(e.to_string()))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_cannot_get_a_slot_in_time_is_shed_as_busy() {
        let hasher = Hasher::new(&Settings {
            hash_concurrency: 1,
            hash_wait: Duration::from_millis(20),
            ..Settings::default()
        });
        // Occupy the only slot until the test lets go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = tokio::sync::oneshot::channel();
        let busy = {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            })
        };
        is_running.await.unwrap();
        let shed = hasher
            .verify("password123".to_owned(), "not-a-hash".to_owned())
            .await;
        assert!(
            matches!(
                shed,
                Err(IdentityError::Busy {
                    retry_after_secs: 1
                })
            ),
            "{shed:?}"
        );
        let problem = chassis::Problem::from(shed.unwrap_err());
        assert_eq!(
            problem.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        let response = axum::response::IntoResponse::into_response(problem);
        assert_eq!(response.headers()["retry-after"], "1");

        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // The slot is free again: work runs.
        let hash = hasher
            .hash(Password::parse("password123").unwrap())
            .await
            .unwrap();
        assert!(hasher.verify("password123".to_owned(), hash).await.unwrap());
    }
}
