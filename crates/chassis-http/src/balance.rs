//! The replicas of one module, and which one a request goes to.
//!
//! A peer is configured as one base URL or a comma-separated list of them
//! (`BAZAAR_PEER_CATALOG=http://10.0.0.5:8080,http://10.0.0.6:8080`). Both the RPC
//! clients ([`rpc::Client`](crate::rpc::Client)) and the gateway's upstreams pick a
//! replica here for every request:
//!
//! - **Round robin** over the replicas that are in the rotation.
//! - **Passive health**: a replica whose request failed (connect error, timeout, 5xx)
//!   is ejected for a backoff (1 s, doubling with each ejection in a row, at most
//!   30 s); when the backoff ends it is let back in, and its next request decides: a
//!   success forgets its failures, a failure ejects it again for twice as long.
//! - When every replica is ejected, the one whose ejection ends first is tried anyway:
//!   refusing outright would only turn a brief outage of all replicas into a longer
//!   one, and the caller's own circuit breaker decides whether to keep calling.
//! - **DNS**: a base URL whose host is a name (a Kubernetes headless Service, ECS
//!   service discovery) is re-resolved every [`RESOLVE_EVERY`] by
//!   [`Replicas::resolve_periodically`], each address becoming a replica of its own
//!   (health kept across resolutions for the addresses that stay). Until the first
//!   resolution, or if resolution fails, the name itself is the replica and the HTTP
//!   client resolves it per connection. Over `https` the name is kept (its
//!   certificate names it): list the replicas instead, or let the platform balance.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::Uri;

/// How often names among the base URLs are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// How long a failed replica is left alone: `first`, doubled for each ejection in a
/// row, at most `longest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub first: Duration,
    pub longest: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            longest: Duration::from_secs(30),
        }
    }
}

/// A base URL that is not `http(s)://authority[/path]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{module}: `{url}` is not an http:// or https:// base URL")]
pub struct BadPeerUrl {
    pub module: String,
    pub url: String,
}

/// The replicas of one module (see the module docs).
#[derive(Debug)]
pub struct Replicas {
    module: &'static str,
    /// As configured: resolved again and again when their host is a name.
    seeds: Vec<Base>,
    /// Per seed, the base URLs its last successful resolution gave: what a failed
    /// lookup of that seed keeps (and nothing of the other seeds').
    resolved: Mutex<Vec<Vec<String>>>,
    current: RwLock<Arc<[Arc<Replica>]>>,
    next: AtomicUsize,
    ejection: Ejection,
}

/// One configured base URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Base {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

impl Base {
    fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.trim().parse().ok()?;
        let scheme = uri.scheme_str()?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        if uri.query().is_some() {
            return None;
        }
        let authority = uri.authority()?;
        Some(Self {
            scheme: scheme.to_owned(),
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(default_port),
            path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self) -> String {
        format!("{}://{}:{}{}", self.scheme, self.host, self.port, self.path)
    }

    fn with_address(&self, ip: IpAddr) -> String {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }

    /// A name to resolve into addresses: not an address literal, and not over TLS
    /// (the certificate is checked against the name, so an `https` replica keeps it
    /// and the HTTP client resolves it per connection).
    fn is_name(&self) -> bool {
        self.scheme == "http"
            && self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_err()
    }
}

/// One replica: its base URL (`http://10.0.0.5:8080`, no trailing slash) and health.
#[derive(Debug)]
pub struct Replica {
    base: String,
    health: Mutex<Health>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    /// Ejections in a row (no success since).
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Replica {
    fn new(base: String) -> Self {
        Self {
            base,
            health: Mutex::default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_rotation(&self, now: Instant) -> bool {
        self.health().ejected_until.is_none_or(|until| until <= now)
    }
}

/// How a request to a replica went, for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that says nothing bad about the replica (2xx, 3xx, 4xx).
    Answered,
    /// No connection, no answer in time, or a 5xx.
    Failed,
}

impl Outcome {
    /// Failed for a 5xx status, else answered.
    pub fn of_status(status: u16) -> Self {
        if status >= 500 {
            Self::Failed
        } else {
            Self::Answered
        }
    }
}

impl Replicas {
    /// `urls` is one base URL or a comma-separated list.
    pub fn parse(module: &'static str, urls: &str) -> Result<Self, BadPeerUrl> {
        Self::with_ejection(module, urls, Ejection::default())
    }

    pub fn with_ejection(
        module: &'static str,
        urls: &str,
        ejection: Ejection,
    ) -> Result<Self, BadPeerUrl> {
        let seeds = split(urls)
            .map(|url| {
                Base::parse(url).ok_or_else(|| BadPeerUrl {
                    module: module.to_owned(),
                    url: url.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(BadPeerUrl {
                module: module.to_owned(),
                url: urls.to_owned(),
            });
        }
        let current: Vec<Arc<Replica>> = seeds
            .iter()
            .map(|seed| Arc::new(Replica::new(seed.url())))
            .collect();
        let resolved = seeds.iter().map(|seed| vec![seed.url()]).collect();
        Ok(Self {
            module,
            seeds,
            resolved: Mutex::new(resolved),
            current: RwLock::new(current.into()),
            next: AtomicUsize::new(0),
            ejection,
        })
    }

    pub fn module(&self) -> &'static str {
        self.module
    }

    /// The replicas now, in rotation or not.
    pub fn replicas(&self) -> Arc<[Arc<Replica>]> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The replica the next request goes to.
    pub fn pick(&self) -> Arc<Replica> {
        self.pick_at(Instant::now())
    }

    fn pick_at(&self, now: Instant) -> Arc<Replica> {
        let replicas = self.replicas();
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        // Round robin over those in the rotation (so each of them gets its share while
        // another is out).
        let in_rotation: Vec<&Arc<Replica>> =
            replicas.iter().filter(|r| r.in_rotation(now)).collect();
        if !in_rotation.is_empty() {
            return Arc::clone(in_rotation[turn % in_rotation.len()]);
        }
        // All ejected: the one back soonest.
        replicas
            .iter()
            .min_by_key(|r| r.health().ejected_until)
            .map_or_else(
                // Never empty (parse refuses an empty list); the first seed otherwise.
                || {
                    Arc::new(Replica::new(
                        self.seeds.first().map(Base::url).unwrap_or_default(),
                    ))
                },
                Arc::clone,
            )
    }

    /// Records how a request to `replica` went.
    pub fn report(&self, replica: &Replica, outcome: Outcome) {
        self.report_at(replica, outcome, Instant::now());
    }

    fn report_at(&self, replica: &Replica, outcome: Outcome, now: Instant) {
        let mut health = replica
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Outcome::Answered => {
                if health.ejections > 0 {
                    tracing::info!(module = self.module, replica = %replica.base, "replica recovered");
                }
                *health = Health::default();
            }
            Outcome::Failed => {
                // A failure of a request sent before the ejection does not extend it.
                if health.ejected_until.is_some_and(|until| until > now) {
                    return;
                }
                let factor = 1_u32 << health.ejections.min(16);
                let backoff = self
                    .ejection
                    .first
                    .saturating_mul(factor)
                    .min(self.ejection.longest);
                health.ejections = health.ejections.saturating_add(1);
                health.ejected_until = Some(now + backoff);
                tracing::warn!(
                    module = self.module,
                    replica = %replica.base,
                    backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "replica ejected after a failed request"
                );
                metrics::counter!("replica_ejections_total", "module" => self.module).increment(1);
            }
        }
    }

    /// Replaces the replicas with `bases`, keeping the health of those that stay.
    fn replace(&self, bases: Vec<String>) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if bases.is_empty() || bases.iter().eq(current.iter().map(|r| &r.base)) {
            return;
        }
        let next: Vec<Arc<Replica>> = bases
            .into_iter()
            .map(|base| {
                current
                    .iter()
                    .find(|r| r.base == base)
                    .map_or_else(|| Arc::new(Replica::new(base)), Arc::clone)
            })
            .collect();
        tracing::info!(
            module = self.module,
            replicas = next.len(),
            "replica set changed"
        );
        *current = next.into();
    }

    /// Resolves the names among the base URLs every [`RESOLVE_EVERY`] until
    /// `shutdown` (nothing to do when every host is an address, or outside a Tokio
    /// runtime).
    pub fn resolve_periodically(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.seeds.iter().any(Base::is_name) || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        let replicas = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                replicas.resolve().await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RESOLVE_EVERY) => {}
                }
            }
        }))
    }

    async fn resolve(&self) {
        let mut lookups = Vec::with_capacity(self.seeds.len());
        for seed in &self.seeds {
            if !seed.is_name() {
                lookups.push(Some(Vec::new()));
                continue;
            }
            match tokio::net::lookup_host((seed.host.as_str(), seed.port)).await {
                Ok(addresses) => lookups.push(Some(addresses.map(|a| a.ip()).collect())),
                Err(error) => {
                    tracing::warn!(module = self.module, host = %seed.host, %error, "cannot resolve a replica name");
                    lookups.push(None);
                }
            }
        }
        self.apply_lookups(lookups);
    }

    /// Turns one round of lookups (per seed: its addresses, `None` when the lookup
    /// failed) into the replica set. A failed lookup keeps what that seed resolved to
    /// last time; a name that resolved to nothing stands for itself.
    fn apply_lookups(&self, lookups: Vec<Option<Vec<IpAddr>>>) {
        let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        for ((seed, lookup), last) in self.seeds.iter().zip(lookups).zip(resolved.iter_mut()) {
            let Some(mut ips) = lookup else { continue };
            ips.sort_unstable();
            ips.dedup();
            *last = if !seed.is_name() || ips.is_empty() {
                vec![seed.url()]
            } else {
                ips.into_iter().map(|ip| seed.with_address(ip)).collect()
            };
        }
        // Two seeds can reach one address: it is one replica, not two turns.
        let mut seen = std::collections::HashSet::new();
        let bases: Vec<String> = resolved
            .iter()
            .flatten()
            .filter(|base| seen.insert(base.as_str()))
            .cloned()
            .collect();
        drop(resolved);
        self.replace(bases);
    }
}

/// The URLs of a comma-separated list, trimmed, empty items left out.
pub use chassis_core::list::comma_separated as split;

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Replicas {
        Replicas::parse("catalog", "http://a:1, http://b:2/,http://c:3/base").unwrap()
    }

    fn picks(replicas: &Replicas, n: usize, now: Instant) -> Vec<String> {
        (0..n)
            .map(|_| replicas.pick_at(now).base().to_owned())
            .collect()
    }

    #[test]
    fn lists_parse_and_bad_urls_are_refused() {
        let replicas = three();
        let bases: Vec<_> = replicas.replicas().iter().map(|r| r.base.clone()).collect();
        assert_eq!(bases, ["http://a:1", "http://b:2", "http://c:3/base"]);
        assert!(Replicas::parse("catalog", "http://a:1,catalog:8080").is_err());
        assert!(Replicas::parse("catalog", " , ").is_err());
        assert!(Replicas::parse("catalog", "ftp://a").is_err());
        let one = Replicas::parse("catalog", "https://catalog").unwrap();
        assert_eq!(one.pick().base(), "https://catalog:443");
    }

    #[test]
    fn round_robin_is_fair() {
        let replicas = three();
        let now = Instant::now();
        let seen = picks(&replicas, 300, now);
        for base in ["http://a:1", "http://b:2", "http://c:3/base"] {
            assert_eq!(seen.iter().filter(|b| *b == base).count(), 100, "{base}");
        }
        // In turn, not in bursts.
        assert_ne!(seen[0], seen[1]);
        assert_ne!(seen[1], seen[2]);
    }

    #[test]
    fn a_failed_replica_is_ejected_then_let_back_and_recovers() {
        let replicas = three();
        let now = Instant::now();
        let b = Arc::clone(&replicas.replicas()[1]);
        replicas.report_at(&b, Outcome::Failed, now);
        let seen = picks(&replicas, 10, now);
        assert!(!seen.iter().any(|base| base == "http://b:2"), "{seen:?}");
        assert_eq!(seen.iter().filter(|b| *b == "http://a:1").count(), 5);

        // Its backoff over, it is in the rotation again.
        let later = now + Duration::from_secs(1);
        assert!(picks(&replicas, 3, later).contains(&"http://b:2".to_owned()));
        // Failing again, it is out for twice as long.
        replicas.report_at(&b, Outcome::Failed, later);
        let almost = later + Duration::from_millis(1999);
        assert!(!picks(&replicas, 6, almost).contains(&"http://b:2".to_owned()));
        let after = later + Duration::from_secs(2);
        assert!(picks(&replicas, 3, after).contains(&"http://b:2".to_owned()));
        // A success forgets its failures: the next ejection is the first one again.
        replicas.report_at(&b, Outcome::Answered, after);
        replicas.report_at(&b, Outcome::Failed, after);
        let one_second = after + Duration::from_secs(1);
        assert!(picks(&replicas, 3, one_second).contains(&"http://b:2".to_owned()));
    }

    #[test]
    fn failures_during_an_ejection_do_not_extend_it_and_backoff_is_capped() {
        let replicas = Replicas::with_ejection(
            "orders",
            "http://a:1,http://b:2",
            Ejection {
                first: Duration::from_secs(1),
                longest: Duration::from_secs(4),
            },
        )
        .unwrap();
        let a = Arc::clone(&replicas.replicas()[0]);
        let mut now = Instant::now();
        replicas.report_at(&a, Outcome::Failed, now);
        // Late answers of requests sent before the ejection.
        replicas.report_at(&a, Outcome::Failed, now + Duration::from_millis(500));
        now += Duration::from_secs(1);
        assert!(a.in_rotation(now));
        for _ in 0..10 {
            replicas.report_at(&a, Outcome::Failed, now);
            now += Duration::from_secs(4);
            assert!(a.in_rotation(now), "the backoff is capped");
        }
    }

    #[test]
    fn when_all_are_ejected_the_one_back_soonest_is_tried() {
        let replicas = Replicas::parse("orders", "http://a:1,http://b:2").unwrap();
        let now = Instant::now();
        let [a, b] = [0, 1].map(|i| Arc::clone(&replicas.replicas()[i]));
        replicas.report_at(&a, Outcome::Failed, now);
        replicas.report_at(&a, Outcome::Failed, now + Duration::from_secs(1));
        replicas.report_at(&b, Outcome::Failed, now + Duration::from_secs(1));
        // a is out until now+3s, b until now+2s.
        let seen = picks(&replicas, 4, now + Duration::from_secs(1));
        assert!(seen.iter().all(|base| base == "http://b:2"), "{seen:?}");
    }

    #[test]
    fn a_new_replica_set_keeps_the_health_of_those_that_stay() {
        let replicas = Replicas::parse("orders", "http://orders:8080").unwrap();
        replicas.replace(vec![
            "http://10.0.0.1:8080".into(),
            "http://10.0.0.2:8080".into(),
        ]);
        let now = Instant::now();
        let first = Arc::clone(&replicas.replicas()[0]);
        replicas.report_at(&first, Outcome::Failed, now);
        replicas.replace(vec![
            "http://10.0.0.1:8080".into(),
            "http://10.0.0.3:8080".into(),
        ]);
        let seen = picks(&replicas, 4, now);
        assert!(
            seen.iter().all(|base| base == "http://10.0.0.3:8080"),
            "{seen:?}"
        );
        // Nothing resolved: the set stays.
        replicas.replace(Vec::new());
        assert_eq!(replicas.replicas().len(), 2);
    }

    #[test]
    fn https_names_are_not_resolved_into_addresses() {
        let tls = Replicas::parse("orders", "https://orders:8443").unwrap();
        assert!(!tls.seeds.iter().any(Base::is_name));
        let plain = Replicas::parse("orders", "http://orders:8080").unwrap();
        assert!(plain.seeds.iter().any(Base::is_name));
    }

    #[tokio::test]
    async fn names_resolve_into_replicas_and_addresses_are_left_as_they_are() {
        let replicas =
            Replicas::parse("orders", "http://localhost:8080,http://10.0.0.9:1").unwrap();
        replicas.resolve().await;
        let bases: Vec<_> = replicas.replicas().iter().map(|r| r.base.clone()).collect();
        assert!(
            bases.contains(&"http://127.0.0.1:8080".to_owned()),
            "{bases:?}"
        );
        assert!(bases.contains(&"http://10.0.0.9:1".to_owned()), "{bases:?}");
        assert!(!bases.iter().any(|b| b.contains("localhost")), "{bases:?}");
    }

    fn bases(replicas: &Replicas) -> Vec<String> {
        replicas.replicas().iter().map(|r| r.base.clone()).collect()
    }

    #[test]
    fn a_failed_lookup_keeps_only_that_names_last_addresses() {
        let replicas = Replicas::parse("orders", "http://a:8080,http://b:8080").unwrap();
        let ip = |last: u8| IpAddr::from([10, 0, 0, last]);
        replicas.apply_lookups(vec![Some(vec![ip(1), ip(2)]), Some(vec![ip(3)])]);
        let first = vec![
            "http://10.0.0.1:8080".to_owned(),
            "http://10.0.0.2:8080".to_owned(),
            "http://10.0.0.3:8080".to_owned(),
        ];
        assert_eq!(bases(&replicas), first);
        // `a` cannot be resolved: its two stay, once each; `b` moved.
        replicas.apply_lookups(vec![None, Some(vec![ip(4)])]);
        assert_eq!(
            bases(&replicas),
            [
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.4:8080"
            ]
        );
        // Again and again: nothing piles up.
        replicas.apply_lookups(vec![None, None]);
        replicas.apply_lookups(vec![None, Some(vec![ip(4)])]);
        assert_eq!(bases(&replicas).len(), 3);
        // Two names reaching one address make one replica.
        replicas.apply_lookups(vec![Some(vec![ip(4)]), Some(vec![ip(4)])]);
        assert_eq!(bases(&replicas), ["http://10.0.0.4:8080"]);
    }
}
