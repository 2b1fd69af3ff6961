//! The storefront: the shop's HTML pages, requested as a browser would, in whichever
//! topology the suite runs (split: through the gateway to `only = storefront`, which
//! calls the catalog over RPC).

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

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
    // Scripts only from the shop itself (order.js), nothing inline.
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(
        !html.contains("<script"),
        "the home page needs no script: {html}"
    );
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
async fn the_assets_are_compiled_in_and_cached() {
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
    let (status, headers, js) = page(&app, "/assets/order.js").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers[reqwest::header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(js.contains("order-status"));
}

/// A browser without JavaScript: it keeps the cookies the shop sets (by hand, so the
/// `Secure` ones are kept over the tests' plain HTTP, as Chromium does for
/// 127.0.0.1) and posts forms with the CSRF token the pages carry.
struct Shopper<'a> {
    app: &'a TestApp,
    cookies: std::collections::BTreeMap<String, String>,
}

/// An answer: status, `Location`, body.
struct Answer {
    status: u16,
    location: Option<String>,
    html: String,
}

impl<'a> Shopper<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            cookies: std::collections::BTreeMap::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = if cookie.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, cookie)
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            assert!(
                set.contains("; Secure") && set.contains("; HttpOnly"),
                "{set}"
            );
            let (name, value) = set.split(';').next().unwrap().split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            html: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.app.client.get(self.app.url(path));
        self.send(request).await
    }

    /// Posts `fields` as a form would, with the page's CSRF token.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self
            .cookies
            .get("__Host-bazaar_csrf")
            .cloned()
            .unwrap_or_default();
        let mut fields = fields.to_vec();
        fields.push(("csrf", &csrf));
        self.post_raw(path, &fields).await
    }

    /// Posts `fields` exactly (no CSRF token unless given).
    async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let request = self.app.client.post(self.app.url(path)).form(fields);
        self.send(request).await
    }

    async fn sign_up(&mut self, email: &str) {
        let form = self.get("/account/signup").await;
        assert_eq!(form.status, 200, "{}", form.html);
        assert!(form.html.contains("name=\"csrf\""));
        let done = self
            .post(
                "/account/signup",
                &[
                    ("name", "Shop Per"),
                    ("email", email),
                    ("password", "password123"),
                ],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.html);
        assert!(self.cookies.contains_key("__Host-bazaar_session"));
        let home = self.get("/").await;
        assert!(home.html.contains("Sign out"), "{}", home.html);
    }

    /// Checks out the cart; the order page's path.
    async fn checkout(&mut self, card: &str) -> String {
        let form = self.get("/checkout").await;
        assert_eq!(form.status, 200, "{}", form.html);
        let key = form
            .html
            .split_once("name=\"key\" value=\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap()
            .to_owned();
        let placed = self
            .post(
                "/checkout",
                &[
                    ("key", &key),
                    ("name", "Ada Lovelace"),
                    ("line1", "1 Main St"),
                    ("line2", ""),
                    ("city", "Springfield"),
                    ("postal_code", "12345"),
                    ("country", "US"),
                    ("payment_token", card),
                ],
            )
            .await;
        assert_eq!(placed.status, 303, "{}", placed.html);
        placed.location.unwrap()
    }

    /// The order page once the order's status is no longer `pending` (bounded).
    async fn settled(&mut self, path: &str) -> (String, String) {
        for _ in 0..200 {
            let page = self.get(path).await;
            assert_eq!(page.status, 200, "{}", page.html);
            let status = page
                .html
                .split_once("data-status=\"")
                .and_then(|(_, rest)| rest.split('"').next())
                .unwrap()
                .to_owned();
            if status != "pending" && status != "cancelling" {
                assert!(!page.html.contains("http-equiv=\"refresh\""));
                return (status, page.html);
            }
            // Followed live by order.js; without JavaScript, reloaded.
            assert!(
                page.html.contains("<noscript><meta http-equiv=\"refresh\"")
                    && page.html.contains("src=\"/assets/order.js\""),
                "pending pages follow the order: {}",
                page.html
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{path} never settled");
    }
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

#[tokio::test]
async fn a_shopper_signs_up_fills_a_cart_and_buys_it() {
    let app = spawn_app().await;
    let products = app.all_products(3).await;
    let (a, b, c) = (&products[0], &products[1], &products[2]);
    let id = |p: &serde_json::Value| p["id"].as_str().unwrap().to_owned();
    let price = |p: &serde_json::Value| p["price_cents"].as_i64().unwrap();

    let mut shopper = Shopper::new(&app);
    // Signed out, the cart asks to sign in.
    let cart = shopper.get("/cart").await;
    assert_eq!(
        (cart.status, cart.location.as_deref()),
        (303, Some("/account/signin?next=%2Fcart"))
    );
    shopper.sign_up("shopper@example.com").await;

    // Two products, one of them twice; a third added and removed.
    for (product, quantity) in [(a, "1"), (b, "2"), (c, "1")] {
        let added = shopper
            .post(
                "/cart/items",
                &[("product_id", &id(product)), ("quantity", quantity)],
            )
            .await;
        assert_eq!(
            (added.status, added.location.as_deref()),
            (303, Some("/cart")),
            "{}",
            added.html
        );
    }
    let changed = shopper
        .post(&format!("/cart/items/{}", id(a)), &[("quantity", "3")])
        .await;
    assert_eq!(changed.status, 303, "{}", changed.html);
    let removed = shopper
        .post(&format!("/cart/items/{}/remove", id(c)), &[])
        .await;
    assert_eq!(removed.status, 303, "{}", removed.html);
    let cart = shopper.get("/cart").await;
    assert_eq!(cart.status, 200, "{}", cart.html);
    assert!(cart.html.contains(a["name"].as_str().unwrap()));
    assert!(
        !cart.html.contains(&format!("/products/{}\"", id(c))),
        "{}",
        cart.html
    );
    let total = price(a) * 3 + price(b) * 2;
    assert!(
        cart.html.contains(&money(total)),
        "{} in {}",
        money(total),
        cart.html
    );

    // A bad address: the checkout form again, the error next to its field.
    let form = shopper.get("/checkout").await;
    assert!(form.html.contains("tok_chargeDeclined") && form.html.contains("tok_timeout"));
    let refused = shopper
        .post(
            "/checkout",
            &[
                ("name", "Ada"),
                ("line1", "1 Main St"),
                ("city", ""),
                ("postal_code", "12345"),
                ("country", "US"),
                ("payment_token", "tok_visa"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    let (_, after_city) = refused.html.split_once("id=\"city\"").unwrap();
    assert!(
        after_city.contains("id=\"city-error\">must be 1 to 100 characters</p>"),
        "{}",
        refused.html
    );
    assert!(
        refused.html.contains("value=\"Ada\""),
        "the form keeps what was typed"
    );

    // A good card: the order page follows it to confirmed.
    let confirmed_path = shopper.checkout("tok_visa").await;
    let (status, page) = shopper.settled(&confirmed_path).await;
    assert_eq!(status, "confirmed", "{page}");
    assert!(page.contains(&money(total)), "{page}");
    // The timeline, oldest first.
    let placed = page
        .find("data-kind=\"OrderPlaced\"")
        .expect("OrderPlaced in the timeline");
    let confirmed = page
        .find("data-kind=\"OrderConfirmed\"")
        .expect("OrderConfirmed in the timeline");
    assert!(placed < confirmed, "{page}");
    // The cart takes the lines bought out when it hears of the confirmation (an
    // event): soon, not at once.
    let mut cart = shopper.get("/cart").await;
    for _ in 0..300 {
        if cart.html.contains("Your cart is empty") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        cart = shopper.get("/cart").await;
    }
    assert!(cart.html.contains("Your cart is empty"), "{}", cart.html);

    // Another shopper cannot see it.
    let mut other = Shopper::new(&app);
    other.sign_up("other@example.com").await;
    let hidden = other.get(&confirmed_path).await;
    assert_eq!(hidden.status, 404, "{}", hidden.html);
    assert!(hidden.html.contains("Page not found"));
    let hidden = other.post(&format!("{confirmed_path}/cancel"), &[]).await;
    assert_eq!(hidden.status, 404, "{}", hidden.html);

    // A declined card: failed, with the reason.
    shopper
        .post("/cart/items", &[("product_id", &id(b)), ("quantity", "1")])
        .await;
    let failed_path = shopper.checkout("tok_chargeDeclined").await;
    let (status, page) = shopper.settled(&failed_path).await;
    assert_eq!(status, "failed", "{page}");
    assert!(page.contains("the card was declined"), "{page}");
    assert!(!page.contains("Cancel this order"));

    // The history lists both; the confirmed one is cancelled.
    let history = shopper.get("/orders").await;
    assert!(history.html.contains(&confirmed_path) && history.html.contains(&failed_path));
    let cancelled = shopper.post(&format!("{confirmed_path}/cancel"), &[]).await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.html);
    let (status, page) = shopper.settled(&confirmed_path).await;
    assert_eq!(status, "cancelled", "{page}");

    // Signing out ends the session cookie.
    let out = shopper.post("/account/signout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(!shopper.cookies.contains_key("__Host-bazaar_session"));
    assert_eq!(shopper.get("/orders").await.status, 303);
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let product = app.first_product().await;
    let product_id = product["id"].as_str().unwrap();
    let mut shopper = Shopper::new(&app);
    shopper.sign_up("csrf@example.com").await;
    let fields = [("product_id", product_id), ("quantity", "1")];
    // No token, a wrong one, and a right token without its cookie.
    let token = shopper.cookies["__Host-bazaar_csrf"].clone();
    let missing = shopper.post_raw("/cart/items", &fields).await;
    let wrong = shopper
        .post_raw(
            "/cart/items",
            &[fields[0], fields[1], ("csrf", &"x".repeat(43))],
        )
        .await;
    shopper.cookies.remove("__Host-bazaar_csrf");
    let cookieless = shopper
        .post_raw("/cart/items", &[fields[0], fields[1], ("csrf", &token)])
        .await;
    for refused in [missing, wrong, cookieless] {
        assert_eq!(refused.status, 403, "{}", refused.html);
        assert!(refused.html.contains("Form refused"), "{}", refused.html);
    }
    // Nothing was added.
    shopper.get("/").await;
    let cart = shopper.get("/cart").await;
    assert!(cart.html.contains("Your cart is empty"), "{}", cart.html);
    // Sign-in is protected too (login CSRF).
    let mut stranger = Shopper::new(&app);
    let refused = stranger
        .post_raw(
            "/account/signin",
            &[("email", "csrf@example.com"), ("password", "password123")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.html);
}

#[tokio::test]
async fn sign_in_and_sign_up_show_what_went_wrong() {
    let app = spawn_app().await;
    let mut shopper = Shopper::new(&app);
    shopper.sign_up("taken@example.com").await;
    shopper.post("/account/signout", &[]).await;
    shopper.get("/account/signin").await;
    let wrong = shopper
        .post(
            "/account/signin",
            &[
                ("email", "taken@example.com"),
                ("password", "nope-nope-nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.html);
    assert!(wrong.html.contains("Wrong email or password"));
    // Sent to sign in from the orders page, the shopper comes back to it.
    let orders = shopper.get("/orders").await;
    let form = shopper.get(&orders.location.unwrap()).await;
    assert!(
        form.html.contains("name=\"next\" value=\"/orders\""),
        "{}",
        form.html
    );
    let ok = shopper
        .post(
            "/account/signin",
            &[
                ("email", "taken@example.com"),
                ("password", "password123"),
                ("next", "/orders"),
            ],
        )
        .await;
    assert_eq!(
        (ok.status, ok.location.as_deref()),
        (303, Some("/orders")),
        "{}",
        ok.html
    );
    assert!(shopper.cookies.contains_key("__Host-bazaar_session"));

    let mut newcomer = Shopper::new(&app);
    newcomer.get("/account/signup").await;
    let taken = newcomer
        .post(
            "/account/signup",
            &[
                ("name", "N"),
                ("email", "taken@example.com"),
                ("password", "password123"),
            ],
        )
        .await;
    assert_eq!(taken.status, 422, "{}", taken.html);
    assert!(taken.html.contains("id=\"email-error\""), "{}", taken.html);
}

#[tokio::test]
async fn a_bank_timeout_is_followed_from_pending_to_failed() {
    let app = spawn_app_with(|c| {
        c.set("payment_timeout_ms", 200);
        c.set("checkout_wait_ms", 100);
    })
    .await;
    let product = app.first_product().await;
    let mut shopper = Shopper::new(&app);
    shopper.sign_up("slow-bank@example.com").await;
    shopper
        .post(
            "/cart/items",
            &[
                ("product_id", product["id"].as_str().unwrap()),
                ("quantity", "1"),
            ],
        )
        .await;
    let path = shopper.checkout("tok_timeout").await;
    // Pending pages refresh themselves (`settled` checks each one it sees).
    let (status, page) = shopper.settled(&path).await;
    assert_eq!(status, "failed", "{page}");
    assert!(page.contains("could not be reached"), "{page}");
}

/// A browser drops the session cookie when its token expires (its Max-Age); the
/// refresh cookie renews the session on the next page instead of asking to sign in.
/// A refresh token used twice ends the session, and signing out forgets both.
#[tokio::test]
async fn an_expired_session_is_renewed_from_the_refresh_cookie() {
    let app = spawn_app().await;
    let mut shopper = Shopper::new(&app);
    shopper.sign_up("renewed@example.com").await;
    let first_refresh = shopper.cookies["__Host-bazaar_refresh"].clone();
    shopper.cookies.remove("__Host-bazaar_session").unwrap();

    let cart = shopper.get("/cart").await;
    assert_eq!(cart.status, 200, "{:?} {}", cart.location, cart.html);
    assert!(cart.html.contains("Sign out"), "{}", cart.html);
    // Both cookies set again, the refresh token a new one (the old one is spent).
    assert!(shopper.cookies.contains_key("__Host-bazaar_session"));
    assert_ne!(shopper.cookies["__Host-bazaar_refresh"], first_refresh);
    // The renewed session is a whole one: forms post with it.
    let product = app.first_product().await;
    let added = shopper
        .post(
            "/cart/items",
            &[
                ("product_id", product["id"].as_str().unwrap()),
                ("quantity", "1"),
            ],
        )
        .await;
    assert_eq!(added.location.as_deref(), Some("/cart"), "{}", added.html);

    // The old refresh token again (a copy of the cookie): refused and forgotten, and
    // the session it belonged to is over.
    let mut thief = Shopper::new(&app);
    thief
        .cookies
        .insert("__Host-bazaar_refresh".to_owned(), first_refresh);
    let refused = thief.get("/cart").await;
    assert_eq!(refused.status, 303, "{}", refused.html);
    assert!(!thief.cookies.contains_key("__Host-bazaar_refresh"));
    assert!(!thief.cookies.contains_key("__Host-bazaar_session"));
    shopper.cookies.remove("__Host-bazaar_session");
    let ended = shopper.get("/cart").await;
    assert_eq!(
        (ended.status, ended.location.as_deref()),
        (303, Some("/account/signin?next=%2Fcart"))
    );

    // Signing out forgets both cookies.
    let mut again = Shopper::new(&app);
    again.sign_up("renewed-again@example.com").await;
    again.post("/account/signout", &[]).await;
    assert!(!again.cookies.contains_key("__Host-bazaar_session"));
    assert!(!again.cookies.contains_key("__Host-bazaar_refresh"));
}

/// What a browser asks for when it loads a page.
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// What the edge answers itself (a path no module owns, the sign-in rate limit) is a
/// page for a browser, and still a problem for API clients.
#[tokio::test]
async fn the_edges_own_errors_are_pages_for_a_browser() {
    let app = spawn_app_with(|c| {
        c.auth_rate_limit_per_second = 1;
        c.auth_rate_limit_burst = 2;
    })
    .await;
    let kind = |r: &reqwest::Response| {
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let page = app
        .client
        .get(app.url("/no/such/page"))
        .header(reqwest::header::ACCEPT, BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(kind(&page).starts_with("text/html"), "{}", kind(&page));
    assert!(
        page.headers()[reqwest::header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Page not found") && html.contains("/assets/shop.css"));
    let problem = app.get("/no/such/page", None).await;
    assert_eq!(problem.status(), 404);
    assert_eq!(kind(&problem), "application/problem+json");

    // Sign-in forms beyond the limit: the edge's 429, as a page saying how long.
    let mut limited = None;
    for _ in 0..20 {
        let response = app
            .client
            .post(app.url("/account/signin"))
            .header(reqwest::header::ACCEPT, BROWSER)
            .form(&[("email", "a@example.com"), ("password", "password123")])
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the sign-in limit answers 429");
    assert!(kind(&limited).starts_with("text/html"));
    assert!(limited.headers().contains_key(reqwest::header::RETRY_AFTER));
    let html = limited.text().await.unwrap();
    assert!(
        html.contains("Slow down") && html.contains("seconds"),
        "{html}"
    );
}
