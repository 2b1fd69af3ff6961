//! Password hashing (argon2id) behind a bound: at most one hash per slot at once,
//! and work that cannot get a slot within the wait is shed rather than queued. Each
//! hash holds 19 MiB and a core for tens of milliseconds; unbounded, a login flood
//! fills the blocking pool (512 threads) and the process's memory.
//!
//! Each slot also owns its 19 MiB of argon2 memory, allocated on first use and kept:
//! a fresh buffer per hash made glibc keep freed ones in per-thread arenas (RSS grew
//! to ~480 MB under a login flood on 2 cores; docs/benchmarks.md), and the pool bounds
//! it at one buffer per slot whatever the allocator.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    /// argon2 working memory, one buffer per slot in use so far.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// The most memory a stored hash may ask for: 64 MiB, over three times the 19 MiB we
/// hash with.
const MAX_VERIFY_M_COST_KIB: u32 = 64 * 1024;

/// A slot's argon2 memory while it hashes; back to the pool when done.
struct Memory {
    blocks: Vec<Block>,
    pool: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Memory {
    fn take(pool: &Arc<Mutex<Vec<Vec<Block>>>>) -> Self {
        let blocks = pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        Self {
            blocks,
            pool: Arc::clone(pool),
        }
    }

    /// At least the blocks `params` need (a buffer only ever grows: every hash we
    /// make has the default parameters).
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.blocks.len() < count {
            self.blocks.resize(count, Block::new());
        }
        &mut self.blocks[..count]
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(blocks);
    }
}

/// argon2id as the crate's defaults have it (the OWASP-recommended m=19 MiB, t=2,
/// p=1), into `memory`: the PHC string of `password` with a fresh salt.
fn hash_into(password: &[u8], memory: &mut Memory) -> Result<String, IdentityError> {
    let failed = |e: &dyn std::fmt::Display| IdentityError::Hashing(e.to_string());
    let argon2 = Argon2::default();
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(
            password,
            salt_bytes,
            &mut out,
            memory.blocks(argon2.params()),
        )
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` is the one `hash` (a PHC string of any argon2 variant and
/// parameters) was made from, computed in `memory`. As the argon2 crate's own
/// verifier: a hash that does not parse is an error, one it cannot check is a
/// mismatch.
fn verify_into(password: &[u8], hash: &str, memory: &mut Memory) -> Result<bool, IdentityError> {
    let parsed = PasswordHash::new(hash).map_err(|e| IdentityError::Hashing(e.to_string()))?;
    // A slot's buffer only grows: a stored hash (imported, or corrupt) asking for more
    // than this would keep that much per slot for good.
    if let Ok(params) = Params::try_from(&parsed) {
        if params.m_cost() > MAX_VERIFY_M_COST_KIB {
            return Err(IdentityError::Hashing(format!(
                "a stored hash asks for {} KiB of memory, over the {MAX_VERIFY_M_COST_KIB} KiB allowed",
                params.m_cost()
            )));
        }
    }
    let mut matches = || -> Option<bool> {
        let expected = parsed.hash?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let argon2 = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        argon2
            .hash_password_into_with_memory(
                password,
                salt,
                &mut out,
                memory.blocks(argon2.params()),
            )
            .ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    };
    Ok(matches().unwrap_or(false))
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
            memory: Arc::default(),
        }
    }

    /// Runs `work` on the blocking pool with a slot's memory once a slot is free, or
    /// sheds it with [`IdentityError::Busy`] after the wait.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> Result<T, IdentityError> + Send + 'static,
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
        let pool = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _in_flight = InFlight::start();
            work(&mut Memory::take(&pool))
        })
        .await
        .map_err(|e| IdentityError::Hashing(e.to_string()))?
    }

    /// argon2id with the crate's defaults (the OWASP-recommended m=19 MiB, t=2, p=1).
    pub(crate) async fn hash(&self, password: Password) -> Result<String, IdentityError> {
        self.run(move |memory| hash_into(password.expose().as_bytes(), memory))
            .await
    }

    pub(crate) async fn verify(
        &self,
        password: String,
        hash: String,
    ) -> Result<bool, IdentityError> {
        self.run(move |memory| verify_into(password.as_bytes(), &hash, memory))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn pooled_hashes_are_the_argon2_crates_both_ways() {
        let pool = Arc::default();
        let mut memory = Memory::take(&pool);
        // Ours verify with the crate's verifier (and the wrong password does not)...
        let ours = hash_into(b"password123", &mut memory).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"password123", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"password124", &parsed)
                .is_err()
        );
        // ...and hashes stored before the pool (the crate's own) verify with ours.
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"password123", &salt)
            .unwrap()
            .to_string();
        assert!(verify_into(b"password123", &theirs, &mut memory).unwrap());
        assert!(!verify_into(b"password124", &theirs, &mut memory).unwrap());
        // Other parameters (fewer blocks than the buffer holds) check too.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"password123", &salt)
        .unwrap()
        .to_string();
        assert!(verify_into(b"password123", &small, &mut memory).unwrap());
        assert!(!verify_into(b"password12", &small, &mut memory).unwrap());
        assert!(verify_into(b"password123", "not-a-hash", &mut memory).is_err());
        // A hash asking for more memory than allowed is refused, not computed.
        let greedy = small.replace("m=64,", &format!("m={},", MAX_VERIFY_M_COST_KIB + 1));
        assert_ne!(greedy, small);
        assert!(verify_into(b"password123", &greedy, &mut memory).is_err());
        // One buffer, back in the pool when done.
        drop(memory);
        assert_eq!(pool.lock().unwrap().len(), 1);
        assert_eq!(pool.lock().unwrap()[0].len(), Params::DEFAULT.block_count());
    }

    /// Occupies the hasher's only slot with work that runs until the sender is used
    /// (or dropped); returns once the work has started.
    async fn hold_the_only_slot(
        hasher: &Hasher,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), IdentityError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = tokio::sync::oneshot::channel();
        let hasher = hasher.clone();
        let holder = tokio::spawn(async move {
            hasher
                .run(move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                })
                .await
        });
        is_running.await.unwrap();
        (release, holder)
    }

    #[tokio::test]
    async fn queued_work_is_answered_once_a_slot_frees_within_the_wait() {
        let hasher = Hasher::new(&Settings {
            hash_concurrency: 1,
            // Far longer than the test: the queued verify must be answered, not shed.
            hash_wait: Duration::from_secs(600),
            ..Settings::default()
        });
        let (release, holder) = hold_the_only_slot(&hasher).await;
        let hash = hash_into(b"password123", &mut Memory::take(&Arc::default())).unwrap();
        let queued = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.verify("password123".to_owned(), hash).await })
        };
        // The verify waits for the slot (it cannot have one: the holder has it).
        tokio::task::yield_now().await;
        assert_eq!(hasher.slots.available_permits(), 0);
        assert!(!queued.is_finished());
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        assert!(queued.await.unwrap().unwrap());
        // Both ran in the one slot's memory: one buffer in the pool.
        assert_eq!(hasher.memory.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn work_that_cannot_get_a_slot_in_time_is_shed_as_busy() {
        let hasher = Hasher::new(&Settings {
            hash_concurrency: 1,
            hash_wait: Duration::from_millis(20),
            ..Settings::default()
        });
        let (release, busy) = hold_the_only_slot(&hasher).await;
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
