//! The pages, as maud templates: every value is escaped unless marked otherwise (none
//! is), and a template that does not compile is a build error, not a broken page.

use axum::http::StatusCode;
use contracts::catalog::{Product, ProductList};
use maud::{DOCTYPE, Markup, html};

use crate::http::STYLESHEET;

/// The frame every page shares: language, viewport, the stylesheet, a skip link, the
/// header with the search form.
fn layout(title: &str, q: Option<&str>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · bazaar" }
                link rel="stylesheet" href=(STYLESHEET);
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "bazaar" }
                    form class="search" role="search" method="get" action="/" {
                        label for="q" { "Search products" }
                        input id="q" type="search" name="q" maxlength="200" value=[q];
                        button type="submit" { "Search" }
                    }
                }
                main id="main" { (body) }
                footer class="bottom" {
                    p { "bazaar — a demo shop. No real money changes hands." }
                }
            }
        }
    }
}

/// `cents` of `currency`, as a shopper reads it.
fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let (units, rest) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    match currency {
        "USD" => format!("{sign}${units}.{rest:02}"),
        other => format!("{sign}{units}.{rest:02} {other}"),
    }
}

fn stock(units: i64) -> Markup {
    html! {
        @if units > 0 {
            p class="stock in" { (units) " in stock" }
        } @else {
            p class="stock out" { "Out of stock" }
        }
    }
}

/// The home page: a page of products, searched by `q`.
pub(crate) fn home(q: Option<&str>, page: &ProductList, first_page: bool) -> Markup {
    let heading = match q {
        Some(q) => format!("Results for “{q}”"),
        None => "Products".to_owned(),
    };
    let next = page.next_cursor.as_deref().map(|cursor| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(q) = q {
            query.append_pair("q", q);
        }
        format!("/?{}", query.append_pair("cursor", cursor).finish())
    });
    let body = html! {
        h1 { (heading) }
        @if page.items.is_empty() {
            p { "No products match. Try another search." }
        } @else {
            ul class="products" {
                @for product in &page.items {
                    li class="card" {
                        h2 { a href={ "/products/" (product.id) } { (product.name) } }
                        p class="price" { (money(product.price_cents, &product.currency)) }
                        (stock(product.stock))
                    }
                }
            }
        }
        nav class="pages" aria-label="Pages" {
            @if !first_page {
                a href={ "/" @if let Some(q) = q { "?" (form_urlencoded::Serializer::new(String::new()).append_pair("q", q).finish()) } } { "First page" }
            }
            @if let Some(next) = next {
                a rel="next" href=(next) { "Next page" }
            }
        }
    };
    layout(&heading, q, &body)
}

/// A product's page.
pub(crate) fn product(product: &Product) -> Markup {
    let body = html! {
        article class="product" {
            h1 { (product.name) }
            p class="sku" { "SKU " (product.sku) }
            p class="price" { (money(product.price_cents, &product.currency)) }
            (stock(product.stock))
            p { (product.description) }
        }
        p { a href="/" { "← Back to all products" } }
    };
    layout(&product.name, None, &body)
}

/// An error page in the shop's style.
pub(crate) fn error(status: StatusCode, message: &str) -> Markup {
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::BAD_REQUEST => "That did not work",
        _ => "Something went wrong",
    };
    let body = html! {
        h1 { (title) }
        p { (message) }
        p { a href="/" { "Back to the shop" } }
    };
    layout(title, None, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_a_price() {
        assert_eq!(money(1999, "USD"), "$19.99");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(-250, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn values_are_escaped() {
        let page = home(
            Some("<script>"),
            &ProductList {
                items: vec![],
                next_cursor: Some("a&b".to_owned()),
            },
            true,
        )
        .into_string();
        assert!(!page.contains("<script>"));
        assert!(page.contains("cursor=a%26b"));
    }
}
