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

/// The HTTP connections of a process: one pool shared by all its clients. HTTP/1.1
/// keeps a connection per call in flight; with `http2` (`internal_http2`) each peer
/// replica gets one HTTP/2 connection that carries every call to it at once (h2c with
/// prior knowledge to `http://` peers, ALPN `h2` to `https://` ones), so a peer must
/// accept HTTP/2, as every bazaar server does.
pub fn http_client(
    mut tls: crate::tls::ClientConfig,
    http2: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        // Fail over fast when a peer is down; the per-call timeout bounds the rest.
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60));
    if http2 {
        // A preconfigured TLS config is used as given, ALPN included.
        tls.alpn_protocols = vec![b"h2".to_vec()];
        builder = builder.http2_prior_knowledge();
    }
    // `https://` peers must show a certificate from the deployment's CA.
    builder.use_preconfigured_tls(tls).build()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::extract::Request;
    use axum::routing::post;
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A peer that answers with the protocol each call arrived over, served the way
    /// every bazaar process serves (plain or TLS), and the RPC client to it.
    async fn echo_version(
        tls: Option<&std::path::Path>,
        http2: bool,
    ) -> (Client, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_tls = tls.map(|dir| {
            crate::tls::server_config(&dir.join("catalog.crt"), &dir.join("catalog.key")).unwrap()
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let router = axum::Router::new().route(
            &format!("{PREFIX}/catalog/version"),
            post(|req: Request| async move { format!("{:?}", req.version()) }),
        );
        let stop = CancellationToken::new();
        tokio::spawn(crate::server::serve(
            listener,
            server_tls,
            router,
            stop.clone(),
            Duration::from_secs(1),
        ));
        let ca = tls.map(|dir| dir.join("ca.pem"));
        let http = http_client(crate::tls::client_config(ca.as_deref()).unwrap(), http2).unwrap();
        let replicas = Replicas::parse("catalog", &format!("{scheme}://{addr}")).unwrap();
        let keys = ServiceKeys::new(b"service-secret-service-secret-xx", "orders");
        let client = Client::new(http, Arc::new(replicas), keys, Duration::from_secs(5));
        (client, stop)
    }

    /// The protocol of four calls made at once (something for HTTP/2 to multiplex).
    async fn version_of_calls(client: &Client) -> Vec<String> {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let client = client.clone();
            calls.spawn(async move { client.send("version", Vec::new()).await });
        }
        let mut versions = Vec::new();
        while let Some(answer) = calls.join_next().await {
            let answer = answer.unwrap().unwrap();
            assert_eq!(answer.status, 200);
            versions.push(String::from_utf8(answer.body).unwrap());
        }
        versions
    }

    #[tokio::test]
    async fn calls_negotiate_http2_when_asked_and_http1_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::generate_dev_pki(dir.path(), &["catalog"]).unwrap();
        for tls in [None, Some(dir.path())] {
            for (http2, expected) in [(true, "HTTP/2.0"), (false, "HTTP/1.1")] {
                let (client, stop) = echo_version(tls, http2).await;
                let versions = version_of_calls(&client).await;
                assert!(
                    versions.iter().all(|v| v == expected),
                    "tls {}, http2 {http2}: {versions:?}",
                    tls.is_some()
                );
                stop.cancel();
            }
        }
    }
}
