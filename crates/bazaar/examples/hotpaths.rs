//! The hot paths of the monolith driven in-process through its whole router (every
//! layer a request meets in `bazaar serve`, minus the socket), for
//! `bench/callgrind.sh`: instruction counts are repeatable where wall time on a shared
//! machine is not.
//!
//! `hotpaths <product|cart|checkout> <count>`: builds a fresh monolith in a temporary
//! directory, signs a user in, warms up, then runs `count` operations, each inside
//! [`Counted`], the only code callgrind counts:
//!
//! - `product`: `GET /api/v1/products/{id}` (cycling over 20 products)
//! - `cart`: `POST /api/v1/cart/items` (quantity 1 of one of 20 products)
//! - `checkout`: add to cart then `POST /api/v1/orders`; the saga that follows runs on
//!   the runtime's other threads and is not counted (the example waits, uncounted, for
//!   each order to leave `pending` before the next operation)
//!
//! What is counted is the request path on the calling thread: the router, its layers,
//! the handler and the module's code up to its awaits. Work handed to other threads
//! (SQLite statements on sqlx's connection threads, spawned tasks) is not.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use bazaar::Application;
use bazaar::config::Config;
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The operations callgrind counts: it collects only while a thread is inside this
/// future's `poll` (`--collect-atstart=no --toggle-collect=*Counted*poll*`), that is
/// the request path as the router runs it on this thread, and nothing of the runtime's
/// other threads (the background loops polling on their timers, whose share grows with
/// valgrind's slowdown rather than with the operations).
struct Counted<F>(F);

impl<F: Future + Unpin> Future for Counted<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&body)?)
        }
        None => Body::empty(),
    };
    let mut request = request.body(body)?;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((status, value))
}

async fn expect(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let (status, value) = call(app, method.clone(), uri, token, body).await?;
    if !status.is_success() {
        bail!("{method} {uri} answered {status}: {value}");
    }
    Ok(value)
}

struct Shop {
    app: Router,
    token: String,
    products: Vec<String>,
    orders: Vec<String>,
}

impl Shop {
    async fn product(&self, i: usize) -> anyhow::Result<()> {
        let uri = format!(
            "/api/v1/products/{}",
            self.products[i % self.products.len()]
        );
        expect(&self.app, Method::GET, &uri, None, None).await?;
        Ok(())
    }

    async fn add_to_cart(&self, i: usize) -> anyhow::Result<()> {
        let product = &self.products[i % self.products.len()];
        let body = json!({"product_id": product, "quantity": 1});
        let app = &self.app;
        expect(
            app,
            Method::POST,
            "/api/v1/cart/items",
            Some(&self.token),
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// Add to cart and place the order; the saga runs on the runtime's other threads.
    async fn checkout(&mut self, i: usize) -> anyhow::Result<()> {
        self.add_to_cart(i).await?;
        let body = json!({
            "payment_token": "tok_visa",
            "shipping_address": {
                "name": "Ada Lovelace",
                "line1": "12 St James Square",
                "city": "London",
                "postal_code": "SW1Y 4JH",
                "country": "GB",
            },
        });
        let order = expect(
            &self.app,
            Method::POST,
            "/api/v1/orders",
            Some(&self.token),
            Some(body),
        )
        .await?;
        let id = order["id"].as_str().context("an order without an id")?;
        self.orders.push(id.to_owned());
        Ok(())
    }

    /// Waits until every order so far has left `pending`.
    async fn settle(&mut self) -> anyhow::Result<()> {
        while let Some(id) = self.orders.last().cloned() {
            let uri = format!("/api/v1/orders/{id}");
            let order = expect(&self.app, Method::GET, &uri, Some(&self.token), None).await?;
            if order["status"] == "pending" {
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                self.orders.pop();
            }
        }
        Ok(())
    }

    async fn run(&mut self, scenario: &str, i: usize) -> anyhow::Result<()> {
        match scenario {
            "product" => self.product(i).await,
            "cart" => self.add_to_cart(i).await,
            "checkout" => self.checkout(i).await,
            other => bail!("unknown scenario {other}: product, cart or checkout"),
        }
    }

    /// One operation, counted; a checkout's saga then settles uncounted, so the next
    /// operation starts from the same state (no order pending) every time.
    async fn counted(&mut self, scenario: &str, i: usize) -> anyhow::Result<()> {
        Counted(Box::pin(self.run(scenario, i))).await?;
        self.settle().await
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "product".to_owned());
    let count: usize = args.next().map_or(Ok(100), |n| n.parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            let dir = tempfile::tempdir()?;
            let mut config = Config {
                data_dir: dir.path().to_owned(),
                http_addr: "127.0.0.1:0".parse()?,
                rate_limit_per_second: 0,
                auth_rate_limit_per_second: 0,
                log_filter: "warn".to_owned(),
                ..Config::default()
            };
            config.set("seed_products", 20);
            // Every process logs and traces as `bazaar serve` does.
            chassis::telemetry::init("bazaar", config.log_format, &config.log_filter);
            let app = Application::build(config).await?;
            let router = app.router();
            let registered = expect(
                &router,
                Method::POST,
                "/api/v1/auth/register",
                None,
                Some(json!({"email": "bench@example.com", "password": "password123", "name": "Bench"})),
            )
            .await?;
            let token = registered["token"].as_str().context("no token")?.to_owned();
            let listed = expect(&router, Method::GET, "/api/v1/products?limit=20", None, None).await?;
            let products = listed["items"]
                .as_array()
                .context("no product list")?
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>();
            if products.is_empty() {
                bail!("no products seeded");
            }
            let mut shop = Shop {
                app: router,
                token,
                products,
                orders: Vec::new(),
            };
            for i in 0..10 {
                shop.run(&scenario, i).await?;
                shop.settle().await?;
            }
            for i in 0..count {
                shop.counted(&scenario, i).await?;
            }
            eprintln!("{scenario}: {count} done");
            app.shutdown_token().cancel();
            Ok(())
        })
}
