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
//!
//! A few admin paths are answered by every module process, each for its own state
//! (dead letters, dependencies, injected faults): the gateway fans those out to every
//! distinct upstream, GET lists merged ([`ProxySettings::fan_out`]) and writes applied
//! everywhere or reported as failed ([`ProxySettings::fan_out_writes`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
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

/// The faults admin path: each module process holds its own injected faults, so the
/// split gateway lists them from every module (a [`ProxySettings::fan_out`] path) and
/// applies `PUT`/`DELETE` of `FAULTS/{target}` to every module (a
/// [`ProxySettings::fan_out_writes`] prefix).
pub const FAULTS: &str = "/api/v1/admin/faults";

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
    /// Prefixes whose children take writes on every module: `PUT` and `DELETE` of
    /// `prefix/{segment}` (exactly one path segment below the prefix, sent on raw,
    /// percent-encoded slashes included) go to every distinct upstream, and the answer
    /// is a success only if every upstream that has the route applied it (e.g.
    /// [`FAULTS`]); empty for none. A list at the prefix itself is a separate
    /// [`fan_out`](Self::fan_out) entry. A prefix that is, or owns, a route's prefix
    /// is left out (logged).
    pub fan_out_writes: Vec<&'static str>,
    /// Upstreams that own no public route but answer the fan-out paths too
    /// (`(module, base URL)`: payments, split).
    pub fan_out_only: Vec<(&'static str, String)>,
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
    /// Asked by the fan-outs only.
    fan_out_only: Vec<Upstream>,
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
            base: parse_base(&base_url),
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
    /// Every upstream once (two prefixes of one service are one upstream), in route
    /// order: who a fan-out asks.
    fn distinct_upstreams(&self) -> Vec<&Upstream> {
        let mut targets: Vec<&Upstream> = Vec::new();
        for upstream in self.routes.iter().chain(&self.fan_out_only) {
            if !targets
                .iter()
                .any(|t| t.name == upstream.name && t.base == upstream.base)
            {
                targets.push(upstream);
            }
        }
        targets
    }

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
/// their lists merged, newest `failed_at` first, each item carrying the `service` that
/// listed it (unless it names one itself). An upstream that cannot be reached or
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

/// Every distinct upstream's answer to the same GET (the request's own path and
/// query, the caller's identity forwarded): `(upstream, response)` for those that
/// answered, and the names of those that could not be reached.
async fn gather(
    proxy: &Proxy,
    request: &axum::http::request::Parts,
) -> Result<Vec<(&'static str, Result<Response, Problem>)>, Response> {
    let headers = proxy
        .upstream_headers(&request.headers, peer(&request.extensions))
        .map_err(IntoResponse::into_response)?;
    let targets = proxy.distinct_upstreams();
    let calls = targets.iter().map(|upstream| {
        let headers = headers.clone();
        async move {
            let Some(base) = upstream.base.as_deref() else {
                return (upstream.name, Err(unavailable(upstream.name)));
            };
            let uri = match target(base, &request.uri) {
                Ok(uri) => uri,
                Err(problem) => return (upstream.name, Err(problem)),
            };
            let mut outgoing = Request::new(Body::empty());
            *outgoing.method_mut() = Method::GET;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            outgoing.headers_mut().remove(header::CONTENT_LENGTH);
            (upstream.name, proxy.send(upstream, outgoing).await)
        }
    });
    Ok(futures::future::join_all(calls).await)
}

async fn fan_out_inner(
    proxy: &Proxy,
    request: &axum::http::request::Parts,
) -> Result<Response, Response> {
    let answers = gather(proxy, request).await?;

    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut unavailable_names: Vec<&'static str> = Vec::new();
    let mut answered = 0_usize;
    for (upstream, answer) in answers {
        let Ok(response) = answer else {
            unavailable_names.push(upstream);
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
        match list_items(upstream, response).await {
            Some(list) => {
                answered += 1;
                // Several modules list the same names (cart and orders each guard
                // their own `catalog` dependency): say whose each item is.
                items.extend(list.into_iter().map(|mut item| {
                    if let Some(object) = item.as_object_mut() {
                        object
                            .entry("service")
                            .or_insert_with(|| serde_json::Value::from(upstream));
                    }
                    item
                }));
            }
            None => unavailable_names.push(upstream),
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
    let mut value = json_body(name, response).await?;
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

/// One upstream's successful JSON answer; `None` (logged) otherwise.
async fn json_body(name: &'static str, response: Response) -> Option<serde_json::Value> {
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
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(upstream = name, error = %error, "fan-out: the upstream's answer is not JSON");
            None
        }
    }
}

/// `GET /api/v1/admin/traces`: every process's recent traces, the edge's own
/// included, merged by trace (each process knows only its own spans of a trace).
async fn traces_list(
    State(proxy): State<Arc<Proxy>>,
    chassis::extract::Query(params): chassis::extract::Query<chassis::admin::traces::ListParams>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(response) = require_admin(&proxy, &mut parts).await {
        return response;
    }
    let limit = match params.limit() {
        Ok(limit) => limit,
        Err(problem) => return problem.into_response(),
    };
    let answers = match gather(&proxy, &parts).await {
        Ok(answers) => answers,
        Err(response) => return response,
    };
    let mut lists = vec![chassis::traces::TraceBuffer::global().summaries(limit)];
    let mut unavailable_names = Vec::new();
    for (upstream, answer) in answers {
        match answer {
            Ok(response) if denied(response.status()) => return response,
            Ok(response) => match list_items(upstream, response).await {
                Some(items) => lists.push(
                    items
                        .into_iter()
                        .filter_map(|item| serde_json::from_value(item).ok())
                        .collect(),
                ),
                None => unavailable_names.push(upstream),
            },
            Err(_) => unavailable_names.push(upstream),
        }
    }
    let items = chassis::traces::merge_summaries(lists, limit);
    axum::Json(serde_json::json!({ "items": items, "unavailable": unavailable_names }))
        .into_response()
}

/// `GET /api/v1/admin/traces/{trace_id}`: the trace's spans from every process.
async fn trace_one(
    State(proxy): State<Arc<Proxy>>,
    chassis::extract::Path(id): chassis::extract::Path<String>,
    request: Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(response) = require_admin(&proxy, &mut parts).await {
        return response;
    }
    let trace_id = match chassis::admin::traces::trace_id(&id) {
        Ok(trace_id) => trace_id,
        Err(problem) => return problem.into_response(),
    };
    let answers = match gather(&proxy, &parts).await {
        Ok(answers) => answers,
        Err(response) => return response,
    };
    let mut parts_found = vec![chassis::traces::TraceBuffer::global().trace(&trace_id)];
    let mut unavailable_names = Vec::new();
    for (upstream, answer) in answers {
        match answer {
            Ok(response) if denied(response.status()) => return response,
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {}
            Ok(response) => match json_body(upstream, response).await {
                Some(body) => parts_found.push(
                    body.get("spans")
                        .cloned()
                        .and_then(|spans| serde_json::from_value(spans).ok())
                        .unwrap_or_default(),
                ),
                None => unavailable_names.push(upstream),
            },
            Err(_) => unavailable_names.push(upstream),
        }
    }
    let spans = chassis::traces::merge_spans(parts_found);
    if spans.is_empty() {
        return chassis::admin::traces::not_found().into_response();
    }
    axum::Json(serde_json::json!({
        "trace_id": trace_id,
        "spans": spans,
        "unavailable": unavailable_names,
    }))
    .into_response()
}

/// The edge checks the caller itself before adding its own spans: with every module
/// down, no module would refuse a caller for it.
async fn require_admin(
    proxy: &Proxy,
    parts: &mut axum::http::request::Parts,
) -> Result<(), Response> {
    use axum::extract::FromRequestParts as _;
    chassis::auth::AdminUser::from_request_parts(parts, &proxy.tokens)
        .await
        .map(drop)
        .map_err(IntoResponse::into_response)
}

/// Every service checks the same forwarded identity: its refusal is the answer.
fn denied(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// What one upstream made of a fanned-out write.
enum WriteOutcome {
    /// 2xx: applied there.
    Applied(Response),
    /// 404: the route does not exist there (e.g. fault admin off); nothing to apply.
    Absent,
    /// Another 4xx: that upstream judged the request itself (identity, body) and
    /// applied nothing.
    Refused(Response),
    /// Unreachable, or an answer that says nothing about whether it applied (5xx,
    /// anything else): why, for the problem's detail.
    Failed(String),
}

/// A fan-out write (`PUT`/`DELETE` of `prefix/{target}`): the same request, body
/// included, sent to every distinct upstream at once.
///
/// - every upstream that has the route applied it (2xx, 404s skipped): the first 2xx
///   answer in route order, passed on as it came;
/// - every upstream answered 404: the common 404 problem;
/// - nothing applied and no upstream failed, all refusing with one 4xx status (a bad
///   identity or body, judged alike by every module): the first refusal, as the GET
///   fan-out passes on a 401;
/// - otherwise (an upstream unreachable, a 5xx, or answers that disagree): 502
///   problem+json naming the upstreams that did not apply it, also listed in `failed`
///   (and those that did in `applied`), so a partial apply never looks like success.
///
/// The target segment is sent on byte for byte, percent-encoded slashes included,
/// where [`forward`] refuses them: there a path chooses the upstream and the route
/// within it, and an upstream (or anything between) that decoded `%2F` could see a
/// path the gateway never agreed to forward. Here the path chooses nothing: the
/// upstreams are every configured one, and the path is the fixed, configured prefix
/// and one opaque segment (a route template like `GET /api/v1/products/{id}` needs
/// its slashes). What could still move a decoding upstream out of the prefix, a `.`
/// or `..` segment, literal or once decoded, is refused (404).
async fn fan_out_write(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match fan_out_write_inner(&proxy, request).await {
        Ok(response) | Err(response) => response,
    }
}

async fn fan_out_write_inner(proxy: &Proxy, request: Request) -> Result<Response, Response> {
    let (parts, body) = request.into_parts();
    let segment = parts.uri.path().rsplit('/').next().unwrap_or_default();
    if leaves_its_segment(segment) {
        return Err(Problem::not_found("no such route").into_response());
    }
    let headers = proxy
        .upstream_headers(&parts.headers, peer(&parts.extensions))
        .map_err(IntoResponse::into_response)?;
    // Read once, sent to every upstream: the edge's body limit applies.
    let body = axum::body::to_bytes(body, chassis::http::BODY_LIMIT_BYTES)
        .await
        .map_err(|error| {
            if caused_by::<LengthLimitError>(&error) {
                Problem::payload_too_large(chassis::http::BODY_LIMIT_BYTES).into_response()
            } else {
                Problem::bad_request("the request body could not be read").into_response()
            }
        })?;

    let targets = proxy.distinct_upstreams();
    let calls = targets.iter().map(|upstream| {
        let mut headers = headers.clone();
        // The client's framing is not ours: the client sets the length of the bytes.
        headers.remove(header::CONTENT_LENGTH);
        let body = body.clone();
        let method = parts.method.clone();
        let uri = &parts.uri;
        async move {
            let Some(base) = upstream.base.as_deref() else {
                return (*upstream, Err(unavailable(upstream.name)));
            };
            let uri = match target(base, uri) {
                Ok(uri) => uri,
                Err(problem) => return (*upstream, Err(problem)),
            };
            let mut outgoing = Request::new(Body::from(body));
            *outgoing.method_mut() = method;
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = headers;
            (*upstream, proxy.send(upstream, outgoing).await)
        }
    });
    let outcomes: Vec<(&'static str, WriteOutcome)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(upstream, answer)| {
            let outcome = match answer {
                Err(problem) if problem.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    WriteOutcome::Failed("unreachable".to_owned())
                }
                Err(_) => WriteOutcome::Failed("no proper answer".to_owned()),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        WriteOutcome::Applied(response)
                    } else if status == StatusCode::NOT_FOUND {
                        WriteOutcome::Absent
                    } else if status.is_client_error() {
                        WriteOutcome::Refused(response)
                    } else {
                        tracing::warn!(upstream = upstream.name, %status, "fan-out write: upstream answered with an error");
                        WriteOutcome::Failed(format!("answered {}", status.as_u16()))
                    }
                }
            };
            (upstream.name, outcome)
        })
        .collect();
    Ok(write_answer(outcomes))
}

/// The client's answer to a fanned-out write (see [`fan_out_write`]).
fn write_answer(outcomes: Vec<(&'static str, WriteOutcome)>) -> Response {
    let applied: Vec<&'static str> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, WriteOutcome::Applied(_)))
        .map(|(name, _)| *name)
        .collect();
    let failed_outright = outcomes
        .iter()
        .any(|(_, o)| matches!(o, WriteOutcome::Failed(_)));
    let refusals: Vec<StatusCode> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            WriteOutcome::Refused(response) => Some(response.status()),
            _ => None,
        })
        .collect();
    let unanimous_refusal =
        applied.is_empty() && !failed_outright && refusals.windows(2).all(|w| w[0] == w[1]);

    let mut failed: Vec<&'static str> = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut first_applied = None;
    let mut first_refused = None;
    for (name, outcome) in outcomes {
        match outcome {
            WriteOutcome::Applied(response) => {
                first_applied.get_or_insert(response);
            }
            WriteOutcome::Absent => {}
            WriteOutcome::Refused(response) => {
                failed.push(name);
                reasons.push(format!("{name} answered {}", response.status().as_u16()));
                first_refused.get_or_insert(response);
            }
            WriteOutcome::Failed(reason) => {
                failed.push(name);
                reasons.push(format!("{name} {reason}"));
            }
        }
    }
    if let Some(refusal) = first_refused.filter(|_| unanimous_refusal) {
        return refusal;
    }
    if !failed.is_empty() {
        tracing::warn!(?failed, ?applied, "fan-out write not applied everywhere");
        let mut detail = format!("not applied on every module: {}", reasons.join(", "));
        if !applied.is_empty() {
            detail = format!("{detail}; applied on {}", applied.join(", "));
        }
        let problem =
            Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway").with_detail(detail);
        let mut body = serde_json::to_value(&problem).unwrap_or_default();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("failed".to_owned(), serde_json::json!(failed));
            fields.insert("applied".to_owned(), serde_json::json!(applied));
        }
        return (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, chassis::error::PROBLEM_JSON)],
            body.to_string(),
        )
            .into_response();
    }
    first_applied.unwrap_or_else(|| Problem::not_found("no such route").into_response())
}

/// Whether one raw path segment is, or once percent-decoded holds, a `.` or `..`
/// segment (split at decoded slashes and backslashes too): what an upstream that
/// decodes and normalises could resolve to a path outside the segment's prefix.
fn leaves_its_segment(segment: &str) -> bool {
    let decoded = segment
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "\\");
    decoded
        .split(['/', '\\'])
        .any(|part| part == "." || part == "..")
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
    fn fault_targets_may_hold_encoded_slashes_but_no_dot_segment() {
        assert!(!leaves_its_segment(
            "GET%20%2Fapi%2Fv1%2Fproducts%2F%7Bid%7D"
        ));
        assert!(!leaves_its_segment("payments.charge"));
        assert!(!leaves_its_segment("a..b%2F...%2F.c"));
        for target in [
            "..",
            ".",
            "%2E%2e",
            "x%2F..%2Finternal",
            "a%5C..",
            "x%2f%2e",
        ] {
            assert!(leaves_its_segment(target), "{target}");
        }
    }

    /// A write prefix that would collide with a route's catch-all is left out rather
    /// than panicking the router; one below a route's prefix is more specific and kept.
    #[test]
    fn write_prefixes_that_collide_with_routes_are_left_out() {
        let settings = ProxySettings {
            tokens: Tokens::new(b"jwt-secret-jwt-secret-jwt-secret", 60),
            keys: ServiceKeys::new(b"service-secret-service-secret-xx", "gateway"),
            connect_timeout: Duration::from_secs(1),
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
