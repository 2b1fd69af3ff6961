//! The serving side: one handler per contract method, for a transport to route to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{Served, answer, args};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Serves one call: decodes the arguments (synchronously, from the body as it came)
/// and returns the work that answers it.
pub type Handle = Arc<dyn Fn(&[u8]) -> BoxFuture<Served> + Send + Sync>;

/// One method of a contract, served.
#[derive(Clone)]
pub struct Handler {
    /// The contract's module, as its clients name it (`catalog`).
    pub service: &'static str,
    pub method: &'static str,
    pub handle: Handle,
}

crate::debug_fields!(Handler { service, method });

impl Handler {
    /// Serves `method` with `call`, which takes the method's arguments as one value
    /// `A` (a struct named by parameter; unknown fields tolerated, as a newer caller
    /// may send an argument this version does not know yet).
    pub fn new<A, F, Fut, T, E>(service: &'static str, method: &'static str, call: F) -> Self
    where
        A: DeserializeOwned,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Serialize + std::fmt::Display,
    {
        let handle: Handle = Arc::new(move |body: &[u8]| -> BoxFuture<Served> {
            match args::<A>(body) {
                Ok(args) => {
                    let work = call(args);
                    Box::pin(async move { answer(work.await) })
                }
                Err(detail) => Box::pin(std::future::ready(Served::Malformed(detail))),
            }
        });
        Self {
            service,
            method,
            handle,
        }
    }
}
