//! The routing table: every route's prefix, the fan-out paths and the write prefixes,
//! each to its handler.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use axum::routing::{any, get, put};
use chassis::CancellationToken;
use chassis::http::balance::Replicas;
use hyper_util::rt::TokioTimer;

use super::fan_out::fan_out;
use super::forward::forward;
use super::settings::{ProxySettings, Route};
use super::traces::{trace_one, traces_list};
use super::upstream::{Proxy, Upstream};
use super::writes::fan_out_write;

/// Idle pooled connections are closed after this, before a service's own keep-alive
/// timeout would close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The router forwarding every route's prefix to its upstream, to be handed to
/// [`crate::router`] as its `modules` (which adds the rate limit, ops routes and common
/// layers; nothing of that is repeated here).
///
/// Routes with an unusable prefix (not starting with `/`, under `/internal`, or a
/// duplicate) are left out, logged at error level. `/` is routed exactly (the path
/// `/` alone), never as a prefix.
pub fn proxy_router(routes: Vec<Route>, settings: ProxySettings) -> Router {
    let (mut builder, connector) =
        crate::client::builder(settings.connect_timeout, settings.tls.clone());
    let client = builder
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector);

    let mut upstreams: Vec<Upstream> = Vec::with_capacity(routes.len());
    for route in routes {
        // The root is the one exact route: `/` (the storefront's home) owns only
        // itself, or it would swallow every path no other prefix owns.
        let root = route.prefix == "/";
        let prefix = route.prefix.trim_end_matches('/');
        if !(root || usable_prefix(prefix)) {
            tracing::error!(
                prefix = route.prefix,
                upstream = route.upstream,
                "proxy route left out: a prefix starts with '/', is not under /internal and has no '{{' or '}}'"
            );
            continue;
        }
        if upstreams.iter().any(|u| u.prefix == prefix) {
            tracing::error!(
                prefix,
                upstream = route.upstream,
                "proxy route left out: duplicate prefix"
            );
            continue;
        }
        let replicas = parse_replicas(route.upstream, &route.base_url);
        if replicas.is_none() {
            tracing::error!(
                upstream = route.upstream,
                base_url = %route.base_url,
                "unusable upstream base URL (expected http(s)://host:port, or a comma-separated list of them): its routes will answer 503"
            );
        }
        upstreams.push(Upstream {
            prefix,
            name: route.upstream,
            replicas,
        });
    }
    upstreams.sort_by_key(|u| std::cmp::Reverse(u.prefix.len()));

    let mut router = Router::new();
    for upstream in &upstreams {
        let prefix = upstream.prefix;
        if prefix.is_empty() {
            router = router.route("/", any(forward));
            continue;
        }
        // The prefix itself, its trailing-slash form and everything below: a catch-all
        // segment matches no empty rest, hence three routes.
        router = router
            .route(prefix, any(forward))
            .route(&format!("{prefix}/"), any(forward))
            .route(&format!("{prefix}/{{*rest}}"), any(forward));
    }
    for path in settings.fan_out {
        if upstreams.iter().any(|u| u.prefix == path) || !usable_prefix(path) {
            tracing::error!(path, "fan-out path left out: unusable or already a route");
            continue;
        }
        router = router.route(path, get(fan_out));
    }
    // Traces: the edge's own spans and every module's, gathered per trace.
    router = router
        .route(chassis::admin::traces::TRACES, get(traces_list))
        .route(
            &format!("{}/{{trace_id}}", chassis::admin::traces::TRACES),
            get(trace_one),
        );
    let mut write_prefixes: Vec<&str> = Vec::new();
    for prefix in settings.fan_out_writes {
        let prefix = prefix.trim_end_matches('/');
        let below = format!("{prefix}/");
        if !usable_prefix(prefix)
            || write_prefixes.contains(&prefix)
            || upstreams
                .iter()
                .any(|u| u.prefix == prefix || u.prefix.starts_with(&below))
        {
            tracing::error!(
                prefix,
                "fan-out write prefix left out: unusable, a duplicate or a route's"
            );
            continue;
        }
        write_prefixes.push(prefix);
        router = router.route(
            &format!("{prefix}/{{target}}"),
            put(fan_out_write).delete(fan_out_write),
        );
    }
    let fan_out_only = settings
        .fan_out_only
        .into_iter()
        .map(|(name, base_url)| Upstream {
            prefix: "",
            name,
            replicas: parse_replicas(name, &base_url),
        })
        .collect();
    router.with_state(Arc::new(Proxy {
        fan_out_only,
        routes: upstreams,
        client,
        tokens: settings.tokens,
        keys: settings.keys,
    }))
}

fn usable_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && prefix.len() > 1
        && !prefix.contains(['{', '}'])
        && prefix != "/internal"
        && !prefix.starts_with("/internal/")
}

/// The replicas at a comma-separated list of `http(s)` base URLs, their names
/// resolved again periodically (plain HTTP only; see [`Replicas`]).
fn parse_replicas(name: &'static str, base_urls: &str) -> Option<Arc<Replicas>> {
    let bases: Vec<String> = chassis::http::balance::split(base_urls)
        .map(parse_base)
        .collect::<Option<_>>()?;
    let replicas = Arc::new(Replicas::parse(name, &bases.join(",")).ok()?);
    // Detached: it lives as long as the process.
    drop(replicas.resolve_periodically(CancellationToken::new()));
    Some(replicas)
}

/// `scheme://authority[/path]` of an `http(s)` base URL, without a trailing slash.
fn parse_base(base_url: &str) -> Option<String> {
    let uri: Uri = base_url.trim().parse().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    if uri.query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    let path = uri.path().trim_end_matches('/');
    Some(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use chassis::auth::{ServiceKeys, Tokens};

    use super::*;
    use crate::proxy::settings::FAULTS;

    /// A write prefix that would collide with a route's catch-all is left out rather
    /// than panicking the router; one below a route's prefix is more specific and kept.
    #[test]
    fn write_prefixes_that_collide_with_routes_are_left_out() {
        let settings = ProxySettings {
            tokens: Tokens::new(b"jwt-secret-jwt-secret-jwt-secret", 60),
            keys: ServiceKeys::new(b"service-secret-service-secret-xx", "gateway"),
            connect_timeout: Duration::from_secs(1),
            tls: chassis::tls::client_config(None).unwrap(),
            fan_out: vec![FAULTS],
            fan_out_writes: vec![FAULTS, FAULTS, "/internal/v1/x", "/api/v1/cart"],
            fan_out_only: Vec::new(),
        };
        let route = |prefix| Route {
            prefix,
            upstream: "m",
            base_url: "http://m:1".to_owned(),
        };
        let _router = proxy_router(
            vec![
                route("/api/v1/admin"),
                route("/api/v1/cart"),
                route("/api/v1/orders"),
            ],
            settings.clone(),
        );
        let _router = proxy_router(
            vec![route("/api/v1/admin/faults/x"), route(FAULTS)],
            ProxySettings {
                fan_out: Vec::new(),
                ..settings
            },
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            parse_base("http://catalog:8080").as_deref(),
            Some("http://catalog:8080")
        );
        assert_eq!(
            parse_base("http://127.0.0.1:1/").as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            parse_base("http://h:1/base/").as_deref(),
            Some("http://h:1/base")
        );
        assert_eq!(
            parse_base("https://catalog:8443").as_deref(),
            Some("https://catalog:8443")
        );
        assert!(parse_base("ftp://catalog:8080").is_none());
        assert!(parse_base("catalog:8080").is_none());
        assert!(parse_base("not a url").is_none());
        let replicas = parse_replicas("m", "http://a:1/, http://b:2").unwrap();
        let bases: Vec<String> = replicas
            .replicas()
            .iter()
            .map(|r| r.base().to_owned())
            .collect();
        assert_eq!(bases, ["http://a:1", "http://b:2"]);
        assert!(parse_replicas("m", "http://a:1,ftp://b:2").is_none());
    }

    #[test]
    fn prefixes() {
        assert!(usable_prefix("/api/v1/cart"));
        assert!(!usable_prefix("/internal"));
        assert!(!usable_prefix("/internal/v1/catalog"));
        assert!(!usable_prefix("/"));
        assert!(!usable_prefix("api"));
        assert!(!usable_prefix("/api/{id}"));
    }
}
