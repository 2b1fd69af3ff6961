//! The storefront: the shop's HTML pages, requested as a browser would, in whichever
//! topology the suite runs (split: through the gateway to `only = storefront`, which
//! calls the catalog over RPC).

use crate::helpers::{TestApp, spawn_app};

/// A page's status, headers and body.
async fn page(app: &TestApp, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = app.get(path, None).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The product links of a listing, in order.
fn product_links(html: &str) -> Vec<&str> {
    html.split("href=\"/products/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The next page's link of a listing, unescaped.
fn next_link(html: &str) -> Option<String> {
    let (_, rest) = html.split_once("rel=\"next\" href=\"")?;
    Some(rest.split('"').next()?.replace("&amp;", "&"))
}

#[tokio::test]
async fn the_home_page_lists_products_and_pages_through_them() {
    let app = spawn_app().await;
    let (status, headers, html) = page(&app, "/").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
    );
    let csp = headers[reqwest::header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script is allowed: {csp}");
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{html}"
    );
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("<label for=\"q\">"));
    let first = product_links(&html);
    assert_eq!(first.len(), 12, "{html}");

    // The next page shows other products.
    let next = next_link(&html).expect("a next page");
    let (status, _, second) = page(&app, &next).await;
    assert_eq!(status, 200, "{second}");
    let second = product_links(&second);
    assert!(!second.is_empty());
    assert!(second.iter().all(|id| !first.contains(id)));
}

#[tokio::test]
async fn a_search_narrows_the_listing() {
    let app = spawn_app().await;
    let product = app.first_product().await;
    let name = product["name"].as_str().unwrap();
    let (_, _, all) = page(&app, "/").await;
    let (status, _, found) = page(&app, &format!("/?q={}", name.replace(' ', "+"))).await;
    assert_eq!(status, 200, "{found}");
    let hits = product_links(&found);
    assert!(hits.contains(&product["id"].as_str().unwrap()), "{found}");
    assert!(hits.len() < product_links(&all).len(), "{found}");
    assert!(
        found.contains(&format!("value=\"{name}\"")),
        "the form keeps the query"
    );

    let (status, _, none) = page(&app, "/?q=no-such-product-anywhere").await;
    assert_eq!(status, 200);
    assert!(product_links(&none).is_empty());
    assert!(none.contains("No products match"));

    // A cursor the catalog never issued is the shopper's mistake, in the shop's style.
    let (status, _, bad) = page(&app, "/?cursor=nonsense").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.contains("<html lang=\"en\">"));
}

#[tokio::test]
async fn a_product_page_shows_price_and_stock_and_unknown_ones_are_404_pages() {
    let app = spawn_app().await;
    let product = app.first_product().await;
    let id = product["id"].as_str().unwrap();
    let (status, _, html) = page(&app, &format!("/products/{id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(product["name"].as_str().unwrap()));
    let cents = product["price_cents"].as_i64().unwrap();
    assert!(
        html.contains(&format!("${}.{:02}", cents / 100, cents % 100)),
        "{html}"
    );
    assert!(
        html.contains(&format!("{} in stock", product["stock"])),
        "{html}"
    );

    for missing in [
        "/products/0190f2c4-0000-7000-8000-000000000000",
        "/products/not-an-id",
        "/assets/nothing.js",
    ] {
        let (status, headers, html) = page(&app, missing).await;
        assert_eq!(status, 404, "{missing}: {html}");
        assert!(html.contains("Page not found"), "{missing}: {html}");
        assert!(headers.contains_key(reqwest::header::CONTENT_SECURITY_POLICY));
    }
}

#[tokio::test]
async fn the_stylesheet_is_compiled_in_and_cached() {
    let app = spawn_app().await;
    let (status, headers, css) = page(&app, "/assets/shop.css").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers[reqwest::header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert!(
        headers[reqwest::header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age="),
    );
    assert!(css.contains(".products"));
}
