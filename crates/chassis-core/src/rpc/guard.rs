//! The guarded side: a contract implementation behind a guard.

use std::future::Future;
use std::sync::Arc;

use super::failure::RemoteError;

/// What protects a caller from a dependency (chassis-resilience's `Dependency`:
/// breaker, bulkhead, timeout, budgeted retries, injected faults). `attempt` is one
/// try of the real call; a guard may call it again to retry, or not at all.
pub trait Guard: Send + Sync + 'static {
    fn call<T, E, F, Fut>(
        &self,
        method: &'static str,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send;

    /// As [`Guard::call`], but `attempt` is tried at most once: for a method that is
    /// not idempotent (a retry after a lost answer would act twice, or, for a
    /// single-use token, be taken for a theft). The default suits a guard that never
    /// retries; one that does must override it.
    fn call_once<T, E, F, Fut>(
        &self,
        method: &'static str,
        attempt: F,
    ) -> impl Future<Output = Result<T, E>> + Send
    where
        T: Send,
        E: RemoteError,
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        self.call(method, attempt)
    }
}

/// A contract implementation (the module's service, or its client) behind a
/// [`Guard`]. [`rpc!`](crate::rpc!) implements each contract trait for
/// `Guarded<dyn Trait, G>`, so callers hold an `Arc<dyn Trait>` as before.
pub struct Guarded<T: ?Sized, G> {
    inner: Arc<T>,
    guard: Arc<G>,
}

impl<T: ?Sized, G> Guarded<T, G> {
    pub fn new(inner: Arc<T>, guard: Arc<G>) -> Self {
        Self { inner, guard }
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<T: ?Sized, G: std::fmt::Debug> std::fmt::Debug for Guarded<T, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}
