//! The edge's HTTP client to the modules: plain `http://` peers, or `https://` ones
//! whose certificates come from the deployment's CA (`tls_ca_file`).

use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
pub(crate) type HttpClient = Client<Connector, Body>;

/// A client builder over a connector that fails fast (`connect_timeout`), sends
/// small writes at once, and speaks TLS to `https://` peers with `tls`.
pub(crate) fn builder(
    connect_timeout: Duration,
    tls: chassis::tls::ClientConfig,
) -> (hyper_util::client::legacy::Builder, Connector) {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // Let `https://` URIs through to the TLS layer.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    (Client::builder(TokioExecutor::new()), connector)
}
