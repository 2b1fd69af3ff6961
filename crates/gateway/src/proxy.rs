//! The split topology's edge: public path prefixes forwarded to the module processes
//! that own them.
//!
//! The gateway is where a caller is authenticated: a bearer token is checked here once
//! and replaced by a short-lived identity signed with the service secret
//! ([`chassis::auth::IDENTITY_HEADER`]), which is all the services behind it accept. A
//! token it refuses is replaced by the reason
//! ([`chassis::auth::IDENTITY_REFUSED_HEADER`]), so the service answers a route that
//! needs a caller with the same 401 as the monolith, and one that does not still works.
//! Anything a client sends that only the gateway may say (those two) is dropped.
//! Bodies stream both ways through a pooled HTTP/1 client, so a large response costs
//! the gateway a buffer, not its size.
//!
//! Only configured prefixes are forwarded: `/internal/...` (service-to-service routes)
//! and anything else unknown falls through to the common 404, and paths with dot
//! segments are refused rather than handed to an upstream that might normalise them
//! into a route the gateway never agreed to forward.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use chassis::Problem;
use chassis::auth::{IDENTITY_HEADER, IDENTITY_REFUSED_HEADER, ServiceKeys, Tokens};
use chassis::error::chain;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The fan-out path of dead letters: in the split topology each service keeps its own,
/// so the gateway asks them all (see [`ProxySettings::fan_out`]).
pub const DEAD_LETTERS: &str = "/api/v1/admin/dead-letters";

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Largest body one upstream may answer a fan-out with (1,000 dead letters with their
/// envelopes fit many times over); beyond it that upstream counts as unavailable.
const FAN_OUT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Idle pooled connections are closed after this, before a service's own keep-alive
/// timeout would close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// One public path prefix and the service that owns it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Matches the path itself and everything below it (`prefix/...`), never a mere
    /// string prefix: `/api/v1/cart` does not take `/api/v1/carts`.
    pub prefix: &'static str,
    /// The module name, for logs, metrics and the 503 detail.
    pub upstream: &'static str,
    /// `http://host:port` (DNS names work); a path in it is prepended.
    pub base_url: String,
}

/// What the proxy needs besides its routes.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Verifies user tokens at the edge.
    pub tokens: Tokens,
    /// Signs the identity forwarded to the services.
    pub keys: ServiceKeys,
    /// How long to wait for a TCP connection to an upstream: a dead peer should cost a
    /// fast 503, not the whole request budget.
    pub connect_timeout: Duration,
    /// GET paths answered by asking every distinct upstream the same path and merging
    /// the `items` of their lists (e.g. [`DEAD_LETTERS`]); empty for none.
    pub fan_out: Vec<&'static str>,
}

/// Where one route's requests go.
struct Upstream {
    prefix: &'static str,
    name: &'static str,
    /// `scheme://authority[/base path]`, no trailing slash; `None` when the configured
    /// base URL is unusable (logged once, answered 503 so other routes still work).
    base: Option<String>,
}

struct Proxy {
    /// Longest prefix first, so the first match is the most specific.
    routes: Vec<Upstream>,
    client: Client<HttpConnector, Body>,
    tokens: Tokens,
    keys: ServiceKeys,
}

/// The router forwarding every route's prefix to its upstream, to be handed to
/// [`crate::router`] as its `modules` (which adds the rate limit, ops routes and common
/// layers; nothing of that is repeated here).
///
/// Routes with an unusable prefix (not starting with `/`, under `/internal`, or a
/// duplicate) are left out, logged at error level.
pub fn proxy_router(routes: Vec<Route>, settings: ProxySettings) -> Router {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector);

    let mut upstreams: Vec<Upstream> = Vec::with_capacity(routes.len());
    for route in routes {
        let prefix = route.prefix.trim_end_matches('/');
        if !usable_prefix(prefix) {
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
        let base = parse_base(&route.base_url);
        if base.is_none() {
            tracing::error!(
                upstream = route.upstream,
                base_url = %route.base_url,
                "unusable upstream base URL (expected http://host:port): its routes will answer 503"
            );
        }
        upstreams.push(Upstream {
            prefix,
            name: route.upstream,
            base,
        });
    }
    upstreams.sort_by_key(|u| std::cmp::Reverse(u.prefix.len()));

    let mut router = Router::new();
    for upstream in &upstreams {
        let prefix = upstream.prefix;
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
    router.with_state(Arc::new(Proxy {
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

/// `scheme://authority[/path]` of an `http` base URL, without a trailing slash.
fn parse_base(base_url: &str) -> Option<String> {
    let uri: Uri = base_url.trim().parse().ok()?;
    if uri.scheme_str() != Some("http") || uri.query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    let path = uri.path().trim_end_matches('/');
    Some(format!("http://{authority}{path}"))
}

impl Proxy {
    /// The most specific route owning `path`.
    fn route_for(&self, path: &str) -> Option<&Upstream> {
        self.routes.iter().find(|u| {
            path.strip_prefix(u.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The headers to send upstream: the client's minus hop-by-hop ones and anything
    /// only the gateway may say, plus the caller's identity and the request's
    /// context (trace, deadline, forwarding chain). A bad bearer is judged here and the
    /// verdict forwarded.
    fn upstream_headers(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<HeaderMap, Problem> {
        let mut out = HeaderMap::with_capacity(headers.len() + 3);
        let listed = connection_listed(headers);
        for (name, value) in headers {
            if is_hop_by_hop(name)
                || listed.contains(name)
                || name == header::HOST
                || name == header::AUTHORIZATION
                || name == IDENTITY_HEADER
                || name == IDENTITY_REFUSED_HEADER
                || name == X_FORWARDED_FOR
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }

        if headers.contains_key(header::AUTHORIZATION) {
            match self.tokens.principal(headers) {
                Ok(principal) => {
                    let identity = self
                        .keys
                        .forward_identity(&principal)
                        .map_err(|e| Problem::internal(&e))?;
                    let value =
                        HeaderValue::from_str(&identity).map_err(|e| Problem::internal(&e))?;
                    out.insert(IDENTITY_HEADER, value);
                }
                // Refused here, once; the service decides whether the route needed a
                // caller (public reads do not), as the monolith does.
                Err(refusal) => {
                    out.insert(
                        IDENTITY_REFUSED_HEADER,
                        HeaderValue::from_static(refusal.code()),
                    );
                }
            }
        }

        // Our span continues the client's trace; without telemetry installed the
        // client's own traceparent (already copied) is the best we have.
        if let Some(value) =
            chassis::telemetry::current_traceparent().and_then(|tp| HeaderValue::from_str(&tp).ok())
        {
            out.insert(TRACEPARENT, value);
        }
        // The outer layers already shortened the budget to the client's; what is left
        // of it is the upstream's.
        if let Some(left) = chassis::deadline::remaining() {
            out.insert(
                chassis::deadline::HEADER,
                chassis::deadline::header_value(left),
            );
        }

        let mut hops: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let peer = peer.map(|ip| ip.to_string());
        if let Some(peer) = &peer {
            hops.push(peer);
        }
        if !hops.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&hops.join(", ")) {
                out.insert(X_FORWARDED_FOR, value);
            }
        }
        Ok(out)
    }

    /// Sends one request, mapping a failure to the client's problem (logged and
    /// counted either way).
    async fn send(&self, upstream: &Upstream, request: Request) -> Result<Response, Problem> {
        let result = self.client.request(request).await;
        match result {
            Ok(response) => {
                count(upstream.name, "ok");
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let name = upstream.name;
                // A failure mid-body can only end the stream; it is still worth a line.
                let body = body.map_err(move |error| {
                    tracing::warn!(upstream = name, error = %chain(&error), "upstream response body failed");
                    error
                });
                Ok(Response::from_parts(parts, Body::new(body)))
            }
            Err(error) => {
                let detail = chain(&error);
                if error.is_connect() {
                    count(upstream.name, "unavailable");
                    tracing::warn!(upstream = upstream.name, error = %detail, "upstream unreachable");
                    Err(unavailable(upstream.name))
                } else if caused_by::<LengthLimitError>(&error) {
                    count(upstream.name, "too_large");
                    Err(Problem::payload_too_large(chassis::http::BODY_LIMIT_BYTES))
                } else {
                    count(upstream.name, "error");
                    tracing::warn!(upstream = upstream.name, error = %detail, "upstream request failed");
                    Err(
                        Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
                            .with_detail(format!("{} did not answer properly", upstream.name)),
                    )
                }
            }
        }
    }
}

fn unavailable(name: &str) -> Problem {
    Problem::unavailable(format!("{name} is unavailable"))
}

fn count(upstream: &'static str, outcome: &'static str) {
    metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream, "outcome" => outcome)
        .increment(1);
}

/// The proxy's handler: every configured prefix lands here.
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match forward_inner(&proxy, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn forward_inner(proxy: &Proxy, request: Request) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if has_dot_segment(path) {
        return Err(Problem::not_found("no such route"));
    }
    let upstream = proxy
        .route_for(path)
        .ok_or_else(|| Problem::not_found("no such route"))?;
    let headers = proxy.upstream_headers(&parts.headers, peer(&parts.extensions))?;
    let base = upstream
        .base
        .as_deref()
        .ok_or_else(|| unavailable(upstream.name))?;
    let uri = target(base, &parts.uri)?;

    // The edge's body limit, also for chunked bodies nothing else reads here.
    let body = Body::new(Limited::new(body, chassis::http::BODY_LIMIT_BYTES));
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    proxy.send(upstream, outgoing).await
}

fn target(base: &str, uri: &Uri) -> Result<Uri, Problem> {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{base}{path_and_query}")
        .parse()
        .map_err(|_| Problem::bad_request("the request target cannot be forwarded"))
}

fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A fan-out path: every distinct upstream is asked the same GET and the `items` of
/// their lists merged, newest `failed_at` first. An upstream that cannot be reached or
/// answers badly is named in `unavailable`; one answering 404 serves none and is
/// skipped; a 401/403 (every service checks the same identity) is the answer. 503 when
/// no upstream answered at all.
async fn fan_out(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    // Only the head is needed, and a body is not `Sync` to borrow across the calls.
    let (parts, _) = request.into_parts();
    match fan_out_inner(&proxy, &parts).await {
        Ok(response) | Err(response) => response,
    }
}

async fn fan_out_inner(
    proxy: &Proxy,
    request: &axum::http::request::Parts,
) -> Result<Response, Response> {
    let headers = proxy
        .upstream_headers(&request.headers, peer(&request.extensions))
        .map_err(IntoResponse::into_response)?;
    let mut targets: Vec<&Upstream> = Vec::new();
    for upstream in &proxy.routes {
        if !targets
            .iter()
            .any(|t| t.name == upstream.name && t.base == upstream.base)
        {
            targets.push(upstream);
        }
    }
    let calls = targets.iter().map(|upstream| {
        let headers = headers.clone();
        async move {
            let Some(base) = upstream.base.as_deref() else {
                return (*upstream, Err(unavailable(upstream.name)));
            };
            let uri = match target(base, &request.uri) {
                Ok(uri) => uri,
                Err(problem) => return (*upstream, Err(problem)),
            };
            let mut outgoing = Request::new(Body::empty());
            *outgoing.method_mut() = Method::GET;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            outgoing.headers_mut().remove(header::CONTENT_LENGTH);
            (*upstream, proxy.send(upstream, outgoing).await)
        }
    });
    let answers = futures::future::join_all(calls).await;

    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut unavailable_names: Vec<&'static str> = Vec::new();
    let mut answered = 0_usize;
    for (upstream, answer) in answers {
        let Ok(response) = answer else {
            unavailable_names.push(upstream.name);
            continue;
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(response);
        }
        if status == StatusCode::NOT_FOUND {
            answered += 1;
            continue;
        }
        match list_items(upstream.name, response).await {
            Some(list) => {
                answered += 1;
                items.extend(list);
            }
            None => unavailable_names.push(upstream.name),
        }
    }
    if answered == 0 && !unavailable_names.is_empty() {
        return Err(Problem::unavailable(format!(
            "no module answered: {}",
            unavailable_names.join(", ")
        ))
        .into_response());
    }
    items.sort_by(|a, b| {
        let at = |v: &serde_json::Value| {
            v.get("failed_at")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        };
        at(b).cmp(&at(a))
    });
    Ok(
        axum::Json(serde_json::json!({ "items": items, "unavailable": unavailable_names }))
            .into_response(),
    )
}

/// The `items` of one upstream's successful list answer; `None` (logged) otherwise.
async fn list_items(name: &'static str, response: Response) -> Option<Vec<serde_json::Value>> {
    let status = response.status();
    if !status.is_success() {
        tracing::warn!(upstream = name, %status, "fan-out: upstream answered with an error");
        return None;
    }
    let bytes = match axum::body::to_bytes(response.into_body(), FAN_OUT_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(upstream = name, error = %chain(&error), "fan-out: cannot read the upstream's answer");
            return None;
        }
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(error) => {
            tracing::warn!(upstream = name, error = %error, "fan-out: the upstream's answer is not JSON");
            return None;
        }
    };
    if let Some(serde_json::Value::Array(items)) =
        value.get_mut("items").map(serde_json::Value::take)
    {
        Some(items)
    } else {
        tracing::warn!(
            upstream = name,
            "fan-out: the upstream's answer has no items array"
        );
        None
    }
}

/// Headers that describe one connection, not the message: never forwarded (RFC 9110
/// §7.6.1). `host` is not among them but is the upstream's own, set by the client.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Headers a `Connection` header names, which are hop-by-hop for this message too.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// `.` or `..` segments, literal or percent-encoded, or an encoded slash or backslash:
/// an upstream (or anything between) that decodes or normalises them would see a
/// different path from the one routed here.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        lower.contains("%2f")
            || lower.contains("%5c")
            || matches!(lower.replace("%2e", ".").as_str(), "." | "..")
    })
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_slashes_are_refused() {
        assert!(has_dot_segment("/api/v1/products/../../internal/v1"));
        assert!(has_dot_segment("/api/v1/products/%2E%2e/x"));
        assert!(has_dot_segment("/api/v1/products/./x"));
        assert!(has_dot_segment("/api/v1/products/a%2Fb"));
        assert!(!has_dot_segment("/api/v1/products/p.1..2"));
        assert!(!has_dot_segment("/api/v1/products"));
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
        assert!(parse_base("https://catalog:8080").is_none());
        assert!(parse_base("catalog:8080").is_none());
        assert!(parse_base("not a url").is_none());
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
