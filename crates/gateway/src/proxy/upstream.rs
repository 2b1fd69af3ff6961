//! The upstreams and the proxy's shared state: who owns which prefix, and how one
//! request is sent to one of them.

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::header::HeaderMap;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chassis::Problem;
use chassis::auth::{ServiceKeys, Tokens};
use chassis::error::chain;
use chassis::http::balance::{Outcome, Replica, Replicas};
use http_body_util::{BodyExt, LengthLimitError};

use super::hop::strip_hop_by_hop;
use super::identity::forwarded_headers;

/// Where one route's requests go.
pub(super) struct Upstream {
    pub(super) prefix: &'static str,
    pub(super) name: &'static str,
    /// Its replicas (one base URL or several, balanced and ejected when failing: see
    /// [`Replicas`]); `None` when the configured base URL is unusable (logged once,
    /// answered 503 so other routes still work).
    pub(super) replicas: Option<Arc<Replicas>>,
}

impl Upstream {
    /// The replica the next request goes to, and the request's target there.
    pub(super) fn target(&self, uri: &Uri) -> Result<(Arc<Replica>, Uri), Problem> {
        let replicas = self
            .replicas
            .as_ref()
            .ok_or_else(|| unavailable(self.name))?;
        let replica = replicas.pick();
        let uri = target(replica.base(), uri)?;
        Ok((replica, uri))
    }

    fn report(&self, replica: &Replica, outcome: Outcome) {
        if let Some(replicas) = &self.replicas {
            replicas.report(replica, outcome);
        }
    }
}

pub(super) struct Proxy {
    /// Longest prefix first, so the first match is the most specific.
    pub(super) routes: Vec<Upstream>,
    /// Asked by the fan-outs only.
    pub(super) fan_out_only: Vec<Upstream>,
    pub(super) client: crate::client::HttpClient,
    pub(super) tokens: Tokens,
    pub(super) keys: ServiceKeys,
}

impl Proxy {
    /// Every upstream once (two prefixes of one service are one upstream), in route
    /// order: who a fan-out asks.
    pub(super) fn distinct_upstreams(&self) -> Vec<&Upstream> {
        let mut targets: Vec<&Upstream> = Vec::new();
        for upstream in self.routes.iter().chain(&self.fan_out_only) {
            if !targets.iter().any(|t| t.name == upstream.name) {
                targets.push(upstream);
            }
        }
        targets
    }

    /// Every replica of every distinct upstream (`None` for an upstream whose base URL
    /// is unusable): whom the fan-outs ask, since each process keeps its own dead
    /// letters, breakers, faults and spans.
    pub(super) fn every_replica(&self) -> Vec<(&Upstream, Option<Arc<Replica>>)> {
        self.distinct_upstreams()
            .into_iter()
            .flat_map(|upstream| {
                let replicas: Vec<Option<Arc<Replica>>> = upstream.replicas.as_ref().map_or_else(
                    || vec![None],
                    |r| r.replicas().iter().cloned().map(Some).collect(),
                );
                replicas.into_iter().map(move |replica| (upstream, replica))
            })
            .collect()
    }

    /// The most specific route owning `path`.
    pub(super) fn route_for(&self, path: &str) -> Option<&Upstream> {
        self.routes.iter().find(|u| {
            path.strip_prefix(u.prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// The headers to send upstream (see [`forwarded_headers`]).
    pub(super) fn upstream_headers(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<HeaderMap, Problem> {
        forwarded_headers(&self.tokens, &self.keys, headers, peer)
    }

    /// Sends one request to `replica` of `upstream`, mapping a failure to the client's
    /// problem (logged and counted either way); a replica that could not be reached or
    /// answered 5xx is ejected for a while.
    pub(super) async fn send(
        &self,
        upstream: &Upstream,
        replica: &Replica,
        request: Request,
    ) -> Result<Response, Problem> {
        let result = self.client.request(request).await;
        let outcome = match &result {
            Ok(response) => Outcome::of_status(response.status().as_u16()),
            // Too large is the client's doing, not the replica's.
            Err(error) if caused_by::<LengthLimitError>(error) => Outcome::Answered,
            Err(_) => Outcome::Failed,
        };
        upstream.report(replica, outcome);
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
                    tracing::warn!(upstream = upstream.name, replica = replica.base(), error = %detail, "upstream unreachable");
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

pub(super) fn unavailable(name: &str) -> Problem {
    Problem::unavailable(format!("{name} is unavailable"))
}

fn count(upstream: &'static str, outcome: &'static str) {
    metrics::counter!("gateway_upstream_requests_total", "upstream" => upstream, "outcome" => outcome)
        .increment(1);
}

pub(super) fn target(base: &str, uri: &Uri) -> Result<Uri, Problem> {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{base}{path_and_query}")
        .parse()
        .map_err(|_| Problem::bad_request("the request target cannot be forwarded"))
}

pub(super) fn peer(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

pub(super) fn caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}
