//! The pages, as maud templates: every value is escaped unless marked otherwise (none
//! is), and a template that does not compile is a build error, not a broken page.
//! Every input has a label; errors are shown next to their field and tied to it with
//! `aria-describedby`.

use std::collections::HashMap;

use axum::http::StatusCode;
use chassis::FieldError;
use contracts::catalog::{Product, ProductList};
use contracts::orders::{OrderPage, OrderSummary, TimelineEntry};
use maud::{DOCTYPE, Markup, html};

use crate::http::{Account, Checkout, ORDER_SCRIPT, STYLESHEET};
use crate::session::Visit;

/// How often the order page looks again while the order is not settled.
const REFRESH_SECS: u32 = 2;

/// A page's frame.
struct Frame<'a> {
    title: &'a str,
    visit: Option<&'a Visit>,
    q: Option<&'a str>,
    /// Follow the order live (`order.js`; without JavaScript a reload every
    /// `REFRESH_SECS`): an order still being processed.
    refresh: bool,
}

impl<'a> Frame<'a> {
    fn new(title: &'a str, visit: Option<&'a Visit>) -> Self {
        Self {
            title,
            visit,
            q: None,
            refresh: false,
        }
    }
}

/// A hidden field carrying the visit's CSRF token.
fn csrf(visit: &Visit) -> Markup {
    html! { input type="hidden" name="csrf" value=(visit.csrf()); }
}

/// The frame every page shares: language, viewport, the stylesheet, a skip link, the
/// header with the search form and the shopper's links.
fn layout(frame: &Frame<'_>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if frame.refresh {
                    // With scripting on, a browser parses this as text: order.js follows
                    // the order in place instead (a page that reloads itself loses the
                    // reader's place and focus; axe's meta-refresh rule).
                    noscript { meta http-equiv="refresh" content=(REFRESH_SECS); }
                }
                title { (frame.title) " · bazaar" }
                link rel="stylesheet" href=(STYLESHEET);
                @if frame.refresh {
                    script src=(ORDER_SCRIPT) defer {}
                }
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "bazaar" }
                    form class="search" role="search" method="get" action="/" {
                        label for="q" { "Search products" }
                        input id="q" type="search" name="q" maxlength="200" value=[frame.q];
                        button type="submit" { "Search" }
                    }
                    nav class="account" aria-label="Account" {
                        @match frame.visit {
                            Some(visit) if visit.shopper.is_some() => {
                                a href="/cart" { "Cart" }
                                a href="/orders" { "Orders" }
                                @if visit.is_admin() {
                                    a href="/console" { "Admin console" }
                                }
                                form method="post" action="/account/signout" {
                                    (csrf(visit))
                                    button class="link" type="submit" { "Sign out" }
                                }
                            }
                            _ => {
                                a href="/account/signin" { "Sign in" }
                                a href="/account/signup" { "Sign up" }
                            }
                        }
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
pub(crate) fn money(cents: i64, currency: &str) -> String {
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

/// A form's errors by field (as the page's inputs are named), and those of no field.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    fields: HashMap<String, String>,
    general: Vec<String>,
}

impl Errors {
    pub(crate) fn one(field: &str, message: &str) -> Self {
        let mut errors = Self::default();
        errors.fields.insert(field.to_owned(), message.to_owned());
        errors
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The API's field errors, named as its bodies are (`shipping_address.city`), on the
/// page's inputs (`city`); an error on a field the form has not is shown on top.
impl From<Vec<FieldError>> for Errors {
    fn from(errors: Vec<FieldError>) -> Self {
        let mut out = Self::default();
        for error in errors {
            let name = error
                .field
                .strip_prefix("shipping_address.")
                .unwrap_or(&error.field);
            if FORM_FIELDS.contains(&name) {
                out.fields.insert(name.to_owned(), error.message);
            } else {
                out.general
                    .push(format!("{}: {}", error.field, error.message));
            }
        }
        out
    }
}

/// Every input name the shop's forms have.
const FORM_FIELDS: &[&str] = &[
    "email",
    "password",
    "name",
    "line1",
    "line2",
    "city",
    "postal_code",
    "country",
    "payment_token",
];

/// A labelled input with its error, if any, next to it.
fn field(
    errors: &Errors,
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    autocomplete: &str,
) -> Markup {
    let error = errors.field(name);
    let error_id = format!("{name}-error");
    html! {
        div class="field" {
            label for=(name) { (label) }
            input id=(name) name=(name) type=(kind) value=(value) autocomplete=(autocomplete)
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| error_id.as_str())];
            @if let Some(error) = error {
                p class="error" id=(error_id) { (error) }
            }
        }
    }
}

fn general_errors(errors: &Errors) -> Markup {
    html! {
        @if !errors.general.is_empty() {
            div class="alert" role="alert" {
                @for message in &errors.general { p { (message) } }
            }
        }
    }
}

/// The home page: a page of products, searched by `q`.
pub(crate) fn home(visit: &Visit, q: Option<&str>, page: &ProductList, first_page: bool) -> Markup {
    let heading = match q {
        Some(q) => format!("Results for “{q}”"),
        None => "Products".to_owned(),
    };
    let search = |cursor: Option<&str>| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(q) = q {
            query.append_pair("q", q);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        if query.is_empty() {
            "/".to_owned()
        } else {
            format!("/?{query}")
        }
    };
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
                a href=(search(None)) { "First page" }
            }
            @if let Some(cursor) = &page.next_cursor {
                a rel="next" href=(search(Some(cursor))) { "Next page" }
            }
        }
    };
    layout(
        &Frame {
            q,
            ..Frame::new(&heading, Some(visit))
        },
        &body,
    )
}

/// A product's page, with its add-to-cart form.
pub(crate) fn product(visit: &Visit, product: &Product) -> Markup {
    let body = html! {
        article class="product" {
            h1 { (product.name) }
            p class="sku" { "SKU " (product.sku) }
            p class="price" { (money(product.price_cents, &product.currency)) }
            (stock(product.stock))
            p { (product.description) }
            @if product.stock > 0 {
                form class="add" method="post" action="/cart/items" {
                    (csrf(visit))
                    input type="hidden" name="product_id" value=(product.id);
                    label for="quantity" { "Quantity" }
                    input id="quantity" name="quantity" type="number" min="1" max="100" value="1" required;
                    button type="submit" { "Add to cart" }
                }
                @if visit.shopper.is_none() {
                    p class="hint" { "You will be asked to sign in first." }
                }
            }
        }
        p { a href="/" { "← Back to all products" } }
    };
    layout(&Frame::new(&product.name, Some(visit)), &body)
}

pub(crate) fn sign_up(visit: &Visit, form: &Account, errors: &Errors) -> Markup {
    let body = html! {
        h1 { "Create an account" }
        (general_errors(errors))
        form class="stack" method="post" action="/account/signup" {
            (csrf(visit))
            (field(errors, "name", "Your name", "text", &form.name, "name"))
            (field(errors, "email", "Email", "email", &form.email, "email"))
            (field(errors, "password", "Password (at least 8 characters)", "password", "", "new-password"))
            button type="submit" { "Sign up" }
        }
        p { "Already have an account? " a href="/account/signin" { "Sign in" } }
    };
    layout(&Frame::new("Sign up", Some(visit)), &body)
}

pub(crate) fn sign_in(visit: &Visit, form: &Account, failed: Option<&str>) -> Markup {
    let errors = Errors::default();
    let body = html! {
        h1 { "Sign in" }
        @if let Some(failed) = failed {
            div class="alert" role="alert" { p { (failed) } }
        }
        form class="stack" method="post" action="/account/signin" {
            (csrf(visit))
            @if !form.next.is_empty() {
                input type="hidden" name="next" value=(form.next);
            }
            (field(&errors, "email", "Email", "email", &form.email, "email"))
            (field(&errors, "password", "Password", "password", "", "current-password"))
            button type="submit" { "Sign in" }
        }
        p { "New here? " a href="/account/signup" { "Create an account" } }
    };
    layout(&Frame::new("Sign in", Some(visit)), &body)
}

/// A cart line, priced now.
#[derive(Debug, Clone)]
pub(crate) struct CartLine {
    pub(crate) product: Product,
    pub(crate) quantity: u32,
}

fn total(lines: &[CartLine]) -> (i64, String) {
    let cents = lines
        .iter()
        .map(|l| l.product.price_cents.saturating_mul(i64::from(l.quantity)))
        .fold(0_i64, i64::saturating_add);
    let currency = lines
        .first()
        .map_or_else(|| "USD".to_owned(), |l| l.product.currency.clone());
    (cents, currency)
}

pub(crate) fn cart(visit: &Visit, lines: &[CartLine]) -> Markup {
    let (total_cents, currency) = total(lines);
    let body = html! {
        h1 { "Your cart" }
        @if lines.is_empty() {
            p { "Your cart is empty. " a href="/" { "Browse the products" } "." }
        } @else {
            table class="lines" {
                caption class="visually-hidden" { "Items in your cart" }
                thead { tr { th scope="col" { "Product" } th scope="col" { "Price" } th scope="col" { "Quantity" } th scope="col" { "Subtotal" } th scope="col" { span class="visually-hidden" { "Remove" } } } }
                tbody {
                    @for line in lines {
                        @let id = &line.product.id;
                        @let qty_id = format!("qty-{id}");
                        tr {
                            td { a href={ "/products/" (id) } { (line.product.name) } }
                            td data-label="Price" { (money(line.product.price_cents, &line.product.currency)) }
                            td {
                                form class="inline" method="post" action={ "/cart/items/" (id) } {
                                    (csrf(visit))
                                    label class="visually-hidden" for=(qty_id) { "Quantity of " (line.product.name) }
                                    input id=(qty_id) name="quantity" type="number" min="0" max="100" value=(line.quantity);
                                    button type="submit" { "Update" }
                                }
                            }
                            td data-label="Subtotal" { (money(line.product.price_cents.saturating_mul(i64::from(line.quantity)), &line.product.currency)) }
                            td {
                                form class="inline" method="post" action={ "/cart/items/" (id) "/remove" } {
                                    (csrf(visit))
                                    button class="secondary" type="submit" aria-label={ "Remove " (line.product.name) } { "Remove" }
                                }
                            }
                        }
                    }
                }
                tfoot { tr { th scope="row" colspan="3" { "Total" } td class="total" { (money(total_cents, &currency)) } td {} } }
            }
            p { a class="button" href="/checkout" { "Check out" } }
        }
    };
    layout(&Frame::new("Cart", Some(visit)), &body)
}

/// The test cards the payment provider knows, explained.
const CARDS: &[(&str, &str, &str)] = &[
    (
        "tok_visa",
        "Test card: approved",
        "The payment goes through and the order is confirmed.",
    ),
    (
        "tok_chargeDeclined",
        "Test card: declined",
        "The bank declines: the order fails and nothing is charged.",
    ),
    (
        "tok_timeout",
        "Test card: bank times out",
        "The bank never answers: the order stays pending while the payment is retried, then fails; nothing is charged.",
    ),
];

pub(crate) fn checkout(
    visit: &Visit,
    lines: &[CartLine],
    form: &Checkout,
    errors: &Errors,
) -> Markup {
    let (total_cents, currency) = total(lines);
    let card_error = errors.field("payment_token");
    let body = html! {
        h1 { "Checkout" }
        (general_errors(errors))
        @if lines.is_empty() {
            p { "Your cart is empty. " a href="/" { "Browse the products" } "." }
        } @else {
            p { (lines.len()) " product(s), total " strong { (money(total_cents, &currency)) } ". " a href="/cart" { "Change the cart" } }
            form class="stack" method="post" action="/checkout" {
                (csrf(visit))
                input type="hidden" name="key" value=(form.key);
                fieldset {
                    legend { "Shipping address" }
                    (field(errors, "name", "Full name", "text", &form.name, "name"))
                    (field(errors, "line1", "Address", "text", &form.line1, "address-line1"))
                    (field(errors, "line2", "Address line 2 (optional)", "text", &form.line2, "address-line2"))
                    (field(errors, "city", "City", "text", &form.city, "address-level2"))
                    (field(errors, "postal_code", "Postal code", "text", &form.postal_code, "postal-code"))
                    (field(errors, "country", "Country (two-letter code, e.g. US)", "text", &form.country, "country"))
                }
                fieldset aria-describedby=[card_error.map(|_| "payment_token-error")] {
                    legend { "Payment" }
                    p class="hint" { "This is a demo: no card is charged. Pick how the test payment should behave." }
                    @for (token, label, explained) in CARDS {
                        @let id = format!("card-{token}");
                        div class="choice" {
                            input type="radio" id=(id) name="payment_token" value=(token) checked[form.payment_token == *token];
                            label for=(id) { strong { (label) } " (" code { (token) } ") — " (explained) }
                        }
                    }
                    @if let Some(error) = card_error {
                        p class="error" id="payment_token-error" { (error) }
                    }
                }
                button type="submit" { "Place order" }
            }
        }
    };
    layout(&Frame::new("Checkout", Some(visit)), &body)
}

/// An order's state, for a shopper.
fn status_text(order: &OrderSummary) -> String {
    match order.status.as_str() {
        "pending" => "Processing: we are reserving your items and taking the payment.".to_owned(),
        "confirmed" => "Confirmed: paid and on its way.".to_owned(),
        "failed" => format!(
            "Failed: {}. Nothing was charged.",
            match order.failure_reason.as_deref() {
                Some("payment_declined") => "the card was declined",
                Some("out_of_stock") => "an item is out of stock",
                Some("payment_unavailable") => "the payment service could not be reached",
                Some(other) => other,
                None => "no reason given",
            }
        ),
        "cancelling" => "Being cancelled: refunding and restocking.".to_owned(),
        "cancelled" => "Cancelled and refunded.".to_owned(),
        other => other.to_owned(),
    }
}

/// An RFC 3339 UTC instant (`2026-12-07T09:21:37.057Z`) to the second, as people
/// read it (`2026-12-07 09:21:37 UTC`); anything else as it is.
fn when(instant: &str) -> String {
    match (instant.get(..10), instant.get(10..11), instant.get(11..19)) {
        (Some(date), Some("T"), Some(time)) if instant.ends_with('Z') => {
            format!("{date} {time} UTC")
        }
        _ => instant.to_owned(),
    }
}

/// An event's type as words: `OrderConfirmed` reads "Order confirmed".
fn event_text(kind: &str) -> String {
    let mut text = String::with_capacity(kind.len() + 4);
    for (i, c) in kind.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            text.push(' ');
            text.push(c.to_ascii_lowercase());
        } else {
            text.push(c);
        }
    }
    text
}

/// Not settled yet: the page follows the order until it is.
fn settling(order: &OrderSummary) -> bool {
    matches!(order.status.as_str(), "pending" | "cancelling")
}

pub(crate) fn order(
    visit: &Visit,
    order: &OrderSummary,
    timeline: &[TimelineEntry],
    products: &HashMap<String, Product>,
) -> Markup {
    let body = html! {
        h1 { "Order " span class="mono" { (order.id) } }
        // order.js updates this element in place (a live region: the change is read out)
        // and swaps #order-live, until data-status is settled.
        p id="order-status" class={ "status " (order.status) } role="status" data-status=(order.status) { (status_text(order)) }
        div id="order-live" data-settling=(if settling(order) { "true" } else { "false" }) {
            @if settling(order) {
                p class="hint" { "This page follows the order until it settles (without JavaScript it reloads every " (REFRESH_SECS) " seconds)." }
            }
            table class="lines" {
                caption class="visually-hidden" { "Items in this order" }
                thead { tr { th scope="col" { "Product" } th scope="col" { "Price" } th scope="col" { "Quantity" } } }
                tbody {
                    @for item in &order.items {
                        tr {
                            td { @match products.get(&item.product_id) {
                                Some(p) => a href={ "/products/" (p.id) } { (p.name) },
                                None => span class="mono" { (item.product_id) },
                            } }
                            td data-label="Price" { (money(item.price_cents, &order.currency)) }
                            td data-label="Quantity" { (item.quantity) }
                        }
                    }
                }
                tfoot { tr { th scope="row" colspan="2" { "Total" } td class="total" { (money(order.total_cents, &order.currency)) } } }
            }
            p { "Placed " time datetime=(order.created_at) { (when(&order.created_at)) } "." }
            section aria-labelledby="timeline" {
                h2 id="timeline" { "What happened" }
                ol class="timeline" {
                    @for entry in timeline {
                        li data-kind=(entry.kind) { time datetime=(entry.occurred_at) { (when(&entry.occurred_at)) } " " span class="event" { (event_text(&entry.kind)) } }
                    }
                }
            }
            @if order.status == "confirmed" {
                form method="post" action={ "/orders/" (order.id) "/cancel" } {
                    (csrf(visit))
                    button class="secondary" type="submit" { "Cancel this order" }
                }
            }
        }
        p { a href="/orders" { "All your orders" } }
    };
    layout(
        &Frame {
            refresh: settling(order),
            ..Frame::new("Order", Some(visit))
        },
        &body,
    )
}

pub(crate) fn orders(visit: &Visit, page: &OrderPage) -> Markup {
    let body = html! {
        h1 { "Your orders" }
        @if page.items.is_empty() {
            p { "No orders yet. " a href="/" { "Browse the products" } "." }
        } @else {
            table class="lines" {
                caption class="visually-hidden" { "Your orders, newest first" }
                thead { tr { th scope="col" { "Order" } th scope="col" { "Placed" } th scope="col" { "Status" } th scope="col" { "Total" } } }
                tbody {
                    @for order in &page.items {
                        tr {
                            td { a class="mono" href={ "/orders/" (order.id) } { (order.id) } }
                            td data-label="Placed" { time datetime=(order.created_at) { (when(&order.created_at)) } }
                            td data-label="Status" { (order.status) }
                            td data-label="Total" { (money(order.total_cents, &order.currency)) }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = &page.next_cursor {
            nav class="pages" aria-label="Pages" {
                a rel="next" href={ "/orders?" (form_urlencoded::Serializer::new(String::new()).append_pair("cursor", cursor).finish()) } { "Older orders" }
            }
        }
    };
    layout(&Frame::new("Orders", Some(visit)), &body)
}

/// An error page in the shop's style.
pub(crate) fn error(status: StatusCode, message: &str) -> Markup {
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::FORBIDDEN => "Form refused",
        StatusCode::TOO_MANY_REQUESTS => "Slow down",
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT => "That did not work",
        _ => "Something went wrong",
    };
    let body = html! {
        h1 { (title) }
        p { (message) }
        p { a href="/" { "Back to the shop" } }
    };
    layout(&Frame::new(title, None), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit() -> Visit {
        Visit::from_headers(
            &axum::http::HeaderMap::new(),
            &chassis::auth::Tokens::new(&[1; 32], 60),
        )
    }

    #[test]
    fn money_reads_as_a_price() {
        assert_eq!(money(1999, "USD"), "$19.99");
        assert_eq!(money(5, "USD"), "$0.05");
        assert_eq!(money(-250, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn values_are_escaped() {
        let page = home(
            &visit(),
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

    #[test]
    fn instants_read_to_the_second() {
        assert_eq!(
            when("2026-12-07T09:21:37.057333Z"),
            "2026-12-07 09:21:37 UTC"
        );
        assert_eq!(when("2026-12-07T09:21:37Z"), "2026-12-07 09:21:37 UTC");
        assert_eq!(when("yesterday"), "yesterday");
        assert_eq!(
            when("2026-12-07T09:21:37+02:00"),
            "2026-12-07T09:21:37+02:00"
        );
    }

    #[test]
    fn events_read_as_words() {
        assert_eq!(event_text("OrderConfirmed"), "Order confirmed");
        assert_eq!(event_text("StockReserved"), "Stock reserved");
        assert_eq!(event_text(""), "");
    }

    #[test]
    fn address_errors_land_on_their_inputs() {
        let errors = Errors::from(vec![
            FieldError::new("shipping_address.city", "must be 1 to 100 characters"),
            FieldError::new("items", "the cart is empty"),
        ]);
        assert_eq!(errors.field("city"), Some("must be 1 to 100 characters"));
        assert_eq!(errors.general, ["items: the cart is empty"]);
    }
}
