//! Per-client rate limiting at the edge: a token bucket per client IP (GCRA, via
//! `governor`), answered with 429 problem+json and `Retry-After`. A limiter may be
//! confined to one path prefix: `/api/v1/auth/` has a stricter one of its own, since
//! each of its requests costs a password hash.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chassis::forwarded::TrustedProxies;
use chassis::{CancellationToken, Problem};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

type Limiter =
    RateLimiter<IpAddr, governor::state::keyed::DefaultKeyedStateStore<IpAddr>, DefaultClock>;

#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<Limiter>,
    /// Whose `X-Forwarded-For` names the client (none by default: the TCP peer is).
    trusted: TrustedProxies,
    /// Only requests under this path prefix count (and may be refused); `None`: all.
    only_under: Option<&'static [&'static str]>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl RateLimit {
    /// `None` when `per_second` is 0 (limiting off).
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            only_under: None,
            trusted: TrustedProxies::default(),
        })
    }

    /// The same limit, keyed by the client behind `proxies` (see
    /// [`TrustedProxies::client`]).
    #[must_use]
    pub fn behind(mut self, proxies: TrustedProxies) -> Self {
        self.trusted = proxies;
        self
    }

    /// The same limit, applied only to paths under one of `prefixes`.
    #[must_use]
    pub fn only_under(mut self, prefixes: &'static [&'static str]) -> Self {
        self.only_under = Some(prefixes);
        self
    }

    /// Forgets idle clients every minute so the table does not grow without bound.
    pub fn spawn_sweeper(&self, shutdown: CancellationToken) {
        let limiter = Arc::clone(&self.limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        });
    }
}

pub(crate) async fn enforce(State(limit): State<RateLimit>, req: Request, next: Next) -> Response {
    if limit
        .only_under
        .is_some_and(|prefixes| !prefixes.iter().any(|p| req.uri().path().starts_with(p)))
    {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = limit.trusted.client(peer, req.headers());
    match limit.limiter.check_key(&ip) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!("http_rate_limited_total").increment(1);
            Problem::too_many_requests(secs.max(1)).into_response()
        }
    }
}
