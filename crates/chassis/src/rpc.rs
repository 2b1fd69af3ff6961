//! Calls between modules, declared once.
//!
//! A contract trait written inside [`rpc!`](crate::rpc!) yields, from that one
//! declaration:
//!
//! - the trait itself, which the owning module implements: in the monolith callers
//!   hold an `Arc<dyn Trait>` of the module's service and the call is a function call;
//! - an HTTP/JSON client implementing the same trait (`POST
//!   /internal/v1/<service>/<method>` with the arguments as one JSON object), so a
//!   caller cannot tell which topology it is in;
//! - the server routes answering those calls by calling an `Arc<dyn Trait>`.
//!
//! Replies are `{"ok": value}` (200) or `{"err": typed error}` (422): the contract's
//! own error enum survives the round trip, and a transport failure (unreachable,
//! timed out, refused credential, unexpected status) becomes that enum's
//! "unavailable" case through [`RemoteError`]. Every call carries a short-lived
//! service credential ([`ServiceKeys`]), the W3C `traceparent` of the calling span and
//! the time left ([`deadline`](crate::deadline)); internal routes refuse calls
//! without a valid credential with 401 ([`internal`]) and are never routed by the
//! gateway.

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::auth::{self, ServiceKeys};
use crate::error::Problem;

/// Where internal routes live; the gateway never forwards this prefix.
pub const PREFIX: &str = "/internal/v1";

/// Why a call to another module got no typed answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcFailure {
    #[error("{peer} is unreachable: {message}")]
    Unreachable { peer: &'static str, message: String },
    #[error("{peer} did not answer within {budget_ms} ms")]
    Timeout { peer: &'static str, budget_ms: u128 },
    #[error("no time left to call {peer}")]
    DeadlineExceeded { peer: &'static str },
    #[error("{peer} refused this service's credential")]
    Unauthorized { peer: &'static str },
    #[error("{peer} answered {status}: {detail}")]
    Status {
        peer: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{peer}: cannot read the answer: {message}")]
    Protocol { peer: &'static str, message: String },
    /// The circuit breaker is open: the call was not made.
    #[error("{peer} is failing; calls are suspended for a while (circuit open)")]
    CircuitOpen { peer: &'static str },
    /// Too many calls to it in flight already (the bulkhead): the call was not made.
    #[error("{peer} has too many calls in flight")]
    Rejected { peer: &'static str },
    /// An injected fault (configuration or the faults admin endpoint).
    #[error("{peer}: injected fault")]
    Injected { peer: &'static str },
}

impl RpcFailure {
    fn outcome(&self) -> &'static str {
        match self {
            RpcFailure::Unreachable { .. } => "unreachable",
            RpcFailure::Timeout { .. } | RpcFailure::DeadlineExceeded { .. } => "timeout",
            RpcFailure::Unauthorized { .. } => "unauthorized",
            RpcFailure::Status { .. } => "status",
            RpcFailure::Protocol { .. } => "protocol",
            RpcFailure::CircuitOpen { .. } => "circuit_open",
            RpcFailure::Rejected { .. } => "rejected",
            RpcFailure::Injected { .. } => "injected",
        }
    }
}

/// A contract error that can travel: serialisable, and with a case for a call that
/// failed on the way.
pub trait RemoteError: Serialize + DeserializeOwned + Send + 'static {
    fn from_failure(failure: RpcFailure) -> Self;
    /// Whether trying again later could succeed (the dependency was unavailable), as
    /// opposed to an answer (out of stock, declined). Breakers count these; retries
    /// repeat them.
    fn is_transient(&self) -> bool;
}

/// The body of every answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T, E> {
    Ok(T),
    Err(E),
}

/// Answers a call: 200 `{"ok": ..}` or 422 `{"err": ..}`. A typed error is the
/// caller's business (out of stock, declined), not a server fault, hence 4xx.
pub fn reply<T: Serialize, E: Serialize + std::fmt::Display>(result: Result<T, E>) -> Response {
    let (status, body) = match result {
        Ok(value) => (
            StatusCode::OK,
            serde_json::to_vec(&Reply::<T, E>::Ok(value)),
        ),
        Err(error) => {
            tracing::debug!(error = %error, "call answered with a typed error");
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::to_vec(&Reply::<T, E>::Err(error)),
            )
        }
    };
    match body {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// Decodes a call's arguments, one JSON object named by parameter; a malformed call is
/// the caller's bug: 400.
pub fn args<A: DeserializeOwned>(body: &[u8]) -> Result<A, Problem> {
    // serde would also take an array as positional arguments: not our wire format.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request(
            "malformed call arguments: expected a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("malformed call arguments: {e}")))
}

/// Guards internal routes: a valid service credential or 401. (`route_layer`, so an
/// unknown internal path is still a plain 404.) Counted per method served
/// ([`track_rpc`](crate::metrics::track_rpc)), refused calls included.
pub fn internal(routes: Router, keys: ServiceKeys) -> Router {
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            keys,
            auth::require_service,
        ))
        .route_layer(axum::middleware::from_fn(crate::metrics::track_rpc))
}

/// A pooled HTTP client for one peer module.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    peer: &'static str,
    keys: ServiceKeys,
    timeout: Duration,
}

/// The HTTP connections of a process: one pool shared by all its clients.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // Fail over fast when a peer is down; the per-call timeout bounds the rest.
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

impl Client {
    /// `peer` (a module name) at `base_url` (`http://catalog:8080`); each call may take
    /// `timeout`, less when the caller's own deadline is nearer.
    pub fn new(
        http: reqwest::Client,
        peer: &'static str,
        base_url: &str,
        keys: ServiceKeys,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            peer,
            keys,
            timeout,
        }
    }

    pub fn peer(&self) -> &'static str {
        self.peer
    }

    /// Calls `method` with `args`; see the module docs for the wire format.
    pub async fn call<A, T, E>(&self, method: &'static str, args: &A) -> Result<T, E>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: RemoteError,
    {
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{}.{method}", self.peer),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            peer = self.peer,
            method,
        );
        let started = Instant::now();
        let result = self.send(method, args).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(Reply::Ok(_)) => "ok",
            Ok(Reply::Err(_)) => "error",
            Err(failure) => {
                span.record("otel.status_code", "error");
                span.in_scope(|| {
                    tracing::warn!(error = %failure, "call to another module failed");
                });
                failure.outcome()
            }
        };
        let labels = [
            ("peer", self.peer.to_owned()),
            ("method", method.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::counter!("rpc_client_requests_total", &labels).increment(1);
        metrics::histogram!("rpc_client_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(Reply::Ok(value)) => Ok(value),
            Ok(Reply::Err(error)) => Err(error),
            Err(failure) => Err(E::from_failure(failure)),
        }
    }

    async fn send<A, T, E>(&self, method: &'static str, args: &A) -> Result<Reply<T, E>, RpcFailure>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let peer = self.peer;
        let budget = crate::deadline::budget(self.timeout);
        if budget.is_zero() {
            return Err(RpcFailure::DeadlineExceeded { peer });
        }
        let credential = self.keys.credential().map_err(|e| {
            tracing::error!(error = %e, "cannot sign a service credential");
            RpcFailure::Unauthorized { peer }
        })?;
        let url = format!("{}{PREFIX}/{peer}/{method}", self.base);
        let mut request = self
            .http
            .post(url)
            .timeout(budget)
            .bearer_auth(credential)
            .header(
                crate::deadline::HEADER,
                crate::deadline::header_value(budget),
            )
            .json(args);
        if let Some(traceparent) = crate::telemetry::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(&e, budget))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(RpcFailure::Unauthorized { peer });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e, budget))?;
        if status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY {
            if let Ok(reply) = serde_json::from_slice::<Reply<T, E>>(&body) {
                return Ok(reply);
            }
            if status == StatusCode::OK {
                return Err(RpcFailure::Protocol {
                    peer,
                    message: "the answer does not match the contract".to_owned(),
                });
            }
        }
        // Not a contract answer: a problem document (404 unknown method after a
        // partial deploy, 503 overloaded, 504 out of time ...). Keep its gist.
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        Err(RpcFailure::Status {
            peer,
            status: status.as_u16(),
            detail,
        })
    }

    fn transport(&self, error: &reqwest::Error, budget: Duration) -> RpcFailure {
        if error.is_timeout() {
            RpcFailure::Timeout {
                peer: self.peer,
                budget_ms: budget.as_millis(),
            }
        } else {
            RpcFailure::Unreachable {
                peer: self.peer,
                message: crate::error::chain(error),
            }
        }
    }
}

/// What the [`rpc!`](crate::rpc!) expansion needs, re-exported so contract crates do
/// not depend on each piece themselves.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use axum::Router;
    pub use axum::body::Bytes;
    pub use axum::response::IntoResponse;
    pub use axum::routing::post;
}

/// Declares a contract trait once and derives its HTTP client and server routes; see
/// the [module docs](crate::rpc). Arguments are owned, serialisable values; every
/// method returns `Result<T, E>` with `E:` [`RemoteError`]. The calling crate must
/// depend on `serde` (the argument structs derive it).
///
/// ```ignore
/// chassis::rpc! {
///     /// What other modules may ask the catalog.
///     pub trait CatalogApi as "catalog" {
///         client CatalogClient;
///         routes catalog_routes;
///         async fn get_product(&self, id: String) -> Result<Product, CatalogError>;
///     }
/// }
/// ```
#[macro_export]
macro_rules! rpc {
    (
        $(#[$trait_meta:meta])*
        $vis:vis trait $Trait:ident as $service:literal {
            client $Client:ident;
            routes $routes:ident;
            $(
                $(#[$method_meta:meta])*
                async fn $method:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> Result<$ok:ty, $err:ty>;
            )*
        }
    ) => {
        $(#[$trait_meta])*
        #[$crate::rpc::__private::async_trait]
        $vis trait $Trait: Send + Sync {
            $(
                $(#[$method_meta])*
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err>;
            )*
        }

        #[doc = concat!("[`", stringify!($Trait), "`] over HTTP: the `", $service, "` module in another process.")]
        #[derive(Debug, Clone)]
        $vis struct $Client($crate::rpc::Client);

        impl $Client {
            pub fn new(client: $crate::rpc::Client) -> Self {
                Self(client)
            }
        }

        #[$crate::rpc::__private::async_trait]
        impl $Trait for $Client {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err> {
                    #[derive(serde::Serialize)]
                    struct Args<'a> {
                        $( $arg: &'a $ty, )*
                        #[serde(skip)]
                        _borrow: ::std::marker::PhantomData<&'a ()>,
                    }
                    self.0
                        .call(
                            stringify!($method),
                            &Args { $( $arg: &$arg, )* _borrow: ::std::marker::PhantomData },
                        )
                        .await
                }
            )*
        }

        /// The same calls through a [`Dependency`]'s guards (breaker, bulkhead,
        /// timeout, budgeted retries, injected faults), for either topology.
        ///
        /// [`Dependency`]: $crate::resilience::Dependency
        #[$crate::rpc::__private::async_trait]
        impl $Trait for $crate::resilience::Guarded<dyn $Trait> {
            $(
                async fn $method(&self $(, $arg: $ty)*) -> Result<$ok, $err> {
                    let inner = self.inner();
                    self.dependency()
                        .call(stringify!($method), || {
                            $( let $arg = ::std::clone::Clone::clone(&$arg); )*
                            async move { inner.$method($( $arg ),*).await }
                        })
                        .await
                }
            )*
        }

        #[doc = concat!("The internal routes answering [`", stringify!($Trait), "`] calls (guard them with `chassis::rpc::internal`).")]
        $vis fn $routes(api: ::std::sync::Arc<dyn $Trait>) -> $crate::rpc::__private::Router {
            $crate::rpc::__private::Router::new()
            $(
                .route(
                    concat!("/internal/v1/", $service, "/", stringify!($method)),
                    $crate::rpc::__private::post({
                        let api = ::std::sync::Arc::clone(&api);
                        move |body: $crate::rpc::__private::Bytes| async move {
                            // Unknown fields are tolerated: a newer caller may
                            // send an argument this version does not know yet.
                            #[derive(serde::Deserialize)]
                            struct Args {
                                $( $arg: $ty, )*
                            }
                            match $crate::rpc::args::<Args>(&body) {
                                Ok(Args { $( $arg, )* }) => {
                                    $crate::rpc::reply(api.$method($( $arg ),*).await)
                                }
                                Err(rejection) => {
                                    $crate::rpc::__private::IntoResponse::into_response(rejection)
                                }
                            }
                        }
                    }),
                )
            )*
        }
    };
}
