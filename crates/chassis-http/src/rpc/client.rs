//! The calling side: a pooled HTTP client for one peer module.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use chassis_core::rpc::{Answer, RpcFailure, Transport};

use super::server::PREFIX;
use crate::auth::ServiceKeys;
use crate::balance::{Outcome, Replicas};

/// A pooled HTTP client for one peer module: the transport its contract's client
/// (`CatalogClient::new(..)`) calls through. Each call goes to one of the module's
/// replicas ([`Replicas`]); a call that fails on the way (unreachable, timed out, 5xx)
/// ejects that replica for a while, and the caller's guard (retries, breaker; see
/// chassis-resilience) sees the failure as before.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    replicas: Arc<Replicas>,
    peer: &'static str,
    keys: ServiceKeys,
    timeout: Duration,
}

/// The HTTP connections of a process: one pool shared by all its clients.
pub fn http_client(tls: crate::tls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // `https://` peers must show a certificate from the deployment's CA.
        .use_preconfigured_tls(tls)
        // Fail over fast when a peer is down; the per-call timeout bounds the rest.
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

impl Client {
    /// `peer` (a module name) at its `replicas`; each call may take `timeout`, less
    /// when the caller's own deadline is nearer.
    pub fn new(
        http: reqwest::Client,
        replicas: Arc<Replicas>,
        keys: ServiceKeys,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            peer: replicas.module(),
            replicas,
            keys,
            timeout,
        }
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
                message: chassis_core::error::chain(error),
            }
        }
    }
}

#[async_trait::async_trait]
impl Transport for Client {
    fn peer(&self) -> &'static str {
        self.peer
    }

    async fn send(&self, method: &'static str, args: Vec<u8>) -> Result<Answer, RpcFailure> {
        let peer = self.peer;
        let budget = crate::deadline::budget(self.timeout);
        if budget.is_zero() {
            return Err(RpcFailure::DeadlineExceeded { peer });
        }
        let credential = self.keys.credential(peer).map_err(|e| {
            tracing::error!(error = %e, "cannot sign a service credential");
            RpcFailure::Unauthorized { peer }
        })?;
        let replica = self.replicas.pick();
        let url = format!("{}{PREFIX}/{peer}/{method}", replica.base());
        let mut request = self
            .http
            .post(url)
            .timeout(budget)
            .bearer_auth(credential)
            .header(
                crate::deadline::HEADER,
                crate::deadline::header_value(budget),
            )
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(args);
        if let Some(traceparent) = chassis_telemetry::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.replicas.report(&replica, Outcome::Failed);
                return Err(self.transport(&error, budget));
            }
        };
        let status = response.status();
        self.replicas
            .report(&replica, Outcome::of_status(status.as_u16()));
        // Refused (401: the credential; 403: this service may not call the peer).
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RpcFailure::Unauthorized { peer });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e, budget))?;
        Ok(Answer {
            status: status.as_u16(),
            body: body.to_vec(),
        })
    }
}
