//! What a module's build hands the composition root.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::BuildError;
use crate::bus::{Handler, RetryPolicy};
use crate::outbox::Outbox;
use crate::rpc::Contract;

/// A background task of a module, started with the process's shutdown signal.
pub type Worker = Box<dyn FnOnce(CancellationToken) -> JoinHandle<()> + Send + Sync>;
/// First-start work (an admin account, a demo catalog), run once the modules are
/// built.
pub type Bootstrap = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), BuildError>> + Send + Sync>;
/// Waits, at most the given time, for a module's in-flight work to stop after
/// shutdown, before the stores close.
pub type Drain = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// A contract implementation a module provides: held for local callers, and served
/// to remote ones.
pub struct Provided {
    pub(crate) provider: &'static str,
    /// The `Arc<dyn Trait>`, for [`Context::call`](super::Context::call).
    pub(crate) api: Box<dyn Any + Send + Sync>,
    pub(crate) handlers: Vec<crate::rpc::Handler>,
}

impl std::fmt::Debug for Provided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provided")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// A built module: its service (for tools such as `bazaar audit`), public routes,
/// provided contracts, outbox, consumer and workers.
pub struct Parts {
    pub(crate) service: Arc<dyn Any + Send + Sync>,
    pub(crate) router: Option<axum::Router>,
    pub(crate) provided: Vec<Provided>,
    pub(crate) outbox: Option<Outbox>,
    pub(crate) consumer: Option<(&'static str, Arc<dyn Handler>, RetryPolicy)>,
    pub(crate) workers: Vec<Worker>,
    pub(crate) bootstrap: Vec<Bootstrap>,
    pub(crate) drain: Option<Drain>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("provided", &self.provided)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Parts {
    /// The module's service, which [`Modules::service`](crate) hands out by type.
    pub fn new<S: Any + Send + Sync>(service: S) -> Self {
        Self {
            service: Arc::new(service),
            router: None,
            provided: Vec::new(),
            outbox: None,
            consumer: None,
            workers: Vec::new(),
            bootstrap: Vec::new(),
            drain: None,
        }
    }

    /// Its public routes.
    #[must_use]
    pub fn routes(mut self, router: axum::Router) -> Self {
        self.router = Some(router);
        self
    }

    /// A contract it provides: local callers get `api`, remote ones its handlers.
    #[must_use]
    pub fn provide<C: Contract + ?Sized>(mut self, api: Arc<C>) -> Self {
        self.provided.push(Provided {
            provider: C::PROVIDER,
            handlers: C::handlers(Arc::clone(&api)),
            api: Box::new(api),
        });
        self
    }

    /// The outbox its events leave through (a relay is started for it).
    #[must_use]
    pub fn outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Its consumer of the topics its descriptor declares.
    #[must_use]
    pub fn consumer(
        mut self,
        name: &'static str,
        handler: Arc<dyn Handler>,
        policy: RetryPolicy,
    ) -> Self {
        self.consumer = Some((name, handler, policy));
        self
    }

    /// A background task.
    #[must_use]
    pub fn worker(
        mut self,
        spawn: impl FnOnce(CancellationToken) -> JoinHandle<()> + Send + Sync + 'static,
    ) -> Self {
        self.workers.push(Box::new(spawn));
        self
    }

    /// First-start work.
    #[must_use]
    pub fn bootstrap(
        mut self,
        run: impl FnOnce() -> BoxFuture<'static, Result<(), BuildError>> + Send + Sync + 'static,
    ) -> Self {
        self.bootstrap.push(Box::new(run));
        self
    }

    /// What shutdown waits for before the stores close.
    #[must_use]
    pub fn drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }
}
