//! The bare baseline: axum routes returning small JSON documents, no layers, no
//! database. Benchmarks measure bazaar's routes against it on the same machine to
//! separate what bazaar costs from what the HTTP stack costs.
//!
//! `GET /api/v1/products/{id}` answers one product whatever the id; `GET
//! /api/v1/products` lists [`PRODUCTS`] of them in bazaar's list shape, so `bazaar
//! loadgen --mix product` can learn ids from it as it does from bazaar.

use std::borrow::Cow;

use serde::Serialize;

/// How many products the listing holds.
const PRODUCTS: u32 = 20;

#[derive(Serialize)]
struct Product {
    /// Borrowed on the product route, so it allocates no more than before.
    id: Cow<'static, str>,
    sku: &'static str,
    name: &'static str,
    description: &'static str,
    price_cents: i64,
    currency: &'static str,
    stock: i64,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Product>,
    next_cursor: Option<String>,
}

fn product_doc(id: Cow<'static, str>) -> Product {
    Product {
        id,
        sku: "BZ-00001",
        name: "Classic Oak Mug",
        description: "A classic oak mug from the bazaar demo catalog, item 1.",
        price_cents: 1299,
        currency: "USD",
        stock: 100,
    }
}

async fn product() -> axum::Json<Product> {
    axum::Json(product_doc(Cow::Borrowed(
        "019a0000-0000-7000-8000-000000000001",
    )))
}

async fn products() -> axum::Json<Page> {
    axum::Json(Page {
        items: (1..=PRODUCTS)
            .map(|i| product_doc(Cow::Owned(format!("019a0000-0000-7000-8000-{i:012}"))))
            .collect(),
        next_cursor: None,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = axum::Router::new()
        .route("/api/v1/products", axum::routing::get(products))
        .route("/api/v1/products/{id}", axum::routing::get(product));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
