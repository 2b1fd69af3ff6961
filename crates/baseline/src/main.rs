//! The bare baseline: one axum route returning a small JSON document, no layers, no
//! database. Benchmarks measure bazaar's routes against it on the same machine to
//! separate what bazaar costs from what the HTTP stack costs.

use serde::Serialize;

#[derive(Serialize)]
struct Product {
    id: &'static str,
    sku: &'static str,
    name: &'static str,
    description: &'static str,
    price_cents: i64,
    currency: &'static str,
    stock: i64,
}

async fn product() -> axum::Json<Product> {
    axum::Json(Product {
        id: "019a0000-0000-7000-8000-000000000001",
        sku: "BZ-00001",
        name: "Classic Oak Mug",
        description: "A classic oak mug from the bazaar demo catalog, item 1.",
        price_cents: 1299,
        currency: "USD",
        stock: 100,
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = axum::Router::new().route("/api/v1/products/{id}", axum::routing::get(product));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
