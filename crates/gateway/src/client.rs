//! The edge's HTTP client to the modules: plain `http://` peers, or `https://` ones
//! whose certificates come from the deployment's CA (`tls_ca_file`); HTTP/1.1, or
//! HTTP/2 with `internal_http2`.

use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
pub(crate) type HttpClient = Client<Connector, Body>;

/// A client builder over a connector that fails fast (`connect_timeout`), sends
/// small writes at once, and speaks TLS to `https://` peers with `tls`. With `http2`
/// (`internal_http2`) it speaks only HTTP/2: h2c with prior knowledge to `http://`
/// peers, ALPN `h2` to `https://` ones; one connection per upstream replica carries
/// every request to it.
pub(crate) fn builder(
    connect_timeout: Duration,
    tls: chassis::tls::ClientConfig,
    http2: bool,
) -> (hyper_util::client::legacy::Builder, Connector) {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // Let `https://` URIs through to the TLS layer.
    http.enforce_http(false);
    let protocols = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let mut builder = Client::builder(TokioExecutor::new());
    let connector = if http2 {
        builder.http2_only(true);
        protocols.enable_http2().wrap_connector(http)
    } else {
        protocols.enable_http1().wrap_connector(http)
    };
    (builder, connector)
}
