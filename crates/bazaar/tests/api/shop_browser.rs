//! The shop's journeys in headless Chromium (`crate::browser`), in whichever topology
//! the suite runs (split: the gateway routes the pages to `only = storefront`, which
//! calls the other modules over RPC): a shopper signs up, searches, fills a cart,
//! changes a quantity and buys; a declined card and a bank that never answers are
//! followed live to their end; a second browser sees none of the first shopper's
//! orders; validation errors stand next to their fields.
//!
//! On every page the journeys visit, axe-core (the npm package's `axe.min.js`, at the
//! path in `BAZAAR_TEST_AXE`; `.ci/run` installs it) must report no serious or
//! critical violation, and the page is saved at 375 px and 1280 px wide in
//! `target/ci/screenshots/` (CI's artifacts). Without chromium the test skips, and
//! without axe it only checks the journeys, unless `BAZAAR_TEST_BROWSER=required`.

use base64::Engine;
use serde_json::{Value, json};

use crate::browser::{BROWSER_PATIENCE, Browser, browser_available, ci_dir, png_size, variant};
use crate::helpers::{TestApp, eventually_within, postgres_url, spawn_app_with, split_topology};

/// Where `.ci/run` puts axe-core's browser bundle.
const AXE_ENV: &str = "BAZAAR_TEST_AXE";

/// The widths every page is saved at: a small phone and a laptop.
const WIDTHS: [u32; 2] = [375, 1280];

/// axe-core's browser bundle, or why there is none (a failure when the browser test
/// is required).
fn axe_source() -> Option<String> {
    let found = std::env::var(AXE_ENV)
        .map_err(|_| format!("{AXE_ENV} is not set"))
        .and_then(|path| {
            std::fs::read_to_string(&path).map_err(|e| format!("{AXE_ENV}={path}: {e}"))
        });
    match found {
        Ok(source) => Some(source),
        Err(reason) => {
            assert!(
                std::env::var("BAZAAR_TEST_BROWSER").as_deref() != Ok("required"),
                "BAZAAR_TEST_BROWSER=required but {reason} (.ci/run installs axe-core)"
            );
            eprintln!("shop journeys without axe: {reason}");
            None
        }
    }
}

/// Runs axe on the page: `serious` lists the serious and critical violations, each as
/// `rule (impact): help [targets]`; `lesser` the other violations' rules; `passed` how
/// many rules passed (none would mean axe checked nothing).
const AXE_RUN: &str = "var done = arguments[arguments.length - 1];
axe.run(document).then(function (result) {
  var serious = function (v) { return v.impact === 'serious' || v.impact === 'critical'; };
  done({
    serious: result.violations.filter(serious).map(function (v) {
      return v.id + ' (' + v.impact + '): ' + v.help + ' ' +
        JSON.stringify(v.nodes.map(function (n) { return n.target.join(' '); }));
    }),
    lesser: result.violations.filter(function (v) { return !serious(v); })
      .map(function (v) { return v.id + ' (' + v.impact + ')'; }),
    passed: result.passes.length
  });
}, function (error) { done({serious: ['axe failed: ' + error], lesser: [], passed: 0}); });";

/// A browser on the shop, checking each page it is on (once per page name): axe, and
/// a screenshot at each of `WIDTHS`.
struct Shop<'a> {
    app: &'a TestApp,
    browser: Browser,
    axe: Option<&'a str>,
    /// The page names checked so far (by every `Shop` of the test), and the lesser
    /// (moderate, minor) violations axe reported on them.
    checked: &'a Checked,
}

/// What the test's pages were checked for: each page name, with axe's lesser
/// violations on it.
type Checked = std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>>;

impl<'a> Shop<'a> {
    async fn open(app: &'a TestApp, axe: Option<&'a str>, checked: &'a Checked) -> Self {
        let browser = Browser::start().await;
        // axe takes a few seconds on a busy machine; a script may take a minute.
        browser
            .post("/timeouts", json!({"script": 60_000}))
            .await
            .unwrap();
        Self {
            app,
            browser,
            axe,
            checked,
        }
    }

    async fn goto(&self, path: &str) {
        self.browser.goto(&self.app.url(path)).await;
    }

    /// Clicks the first element matching `css`.
    async fn click(&self, css: &str) {
        let element = self.browser.find(css).await.unwrap();
        self.browser.click(&element).await.unwrap();
    }

    /// Waits (bounded) until the page's path satisfies `check`; that path.
    async fn wait_for_path(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        eventually_within(what, BROWSER_PATIENCE, || async {
            let path = self.browser.path().await;
            if check(&path) { Ok(path) } else { Err(path) }
        })
        .await
    }

    /// The page's `h1`, once there is one.
    async fn heading(&self) -> String {
        self.browser
            .wait_for_text("h1", "a heading", |t| !t.is_empty())
            .await
    }

    /// Checks the page as `name`, the first time that name is seen: no serious or
    /// critical axe violation, and a full-page screenshot at each width.
    async fn check(&self, name: &str) {
        if self.checked.lock().unwrap().contains_key(name) {
            return;
        }
        let lesser = match self.axe {
            Some(axe) => {
                let result = self.axe(axe).await;
                assert_eq!(
                    result["serious"],
                    json!([]),
                    "axe: serious or critical violations on {name} ({})",
                    self.browser.path().await
                );
                result["lesser"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            None => vec!["(axe not run)".to_owned()],
        };
        self.checked.lock().unwrap().insert(name.to_owned(), lesser);
        let dir = ci_dir().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        for width in WIDTHS {
            let png = self.full_page(width).await;
            let (shot_width, height) = png_size(&png).expect("a PNG");
            assert_eq!(shot_width, width, "{name} at {width} px");
            assert!(height >= 300, "{name} at {width} px is {height} px high");
            let path = dir.join(format!("{name}-{width}{}.png", variant(self.app)));
            std::fs::write(&path, &png).unwrap();
        }
    }

    /// axe's findings on the page (see `AXE_RUN`).
    async fn axe(&self, axe: &str) -> Value {
        // Evaluated by the driver, not as a <script> element: the shop's CSP
        // (script-src 'self') rightly refuses inline code.
        let injected = self
            .browser
            .execute(&format!("{axe}\nreturn typeof window.axe;"))
            .await
            .unwrap();
        assert_eq!(injected, "object", "axe-core is loaded");
        let result = self.browser.execute_async(AXE_RUN).await.unwrap();
        assert!(
            result["passed"].as_u64().is_some_and(|n| n >= 10),
            "axe checked the page: {result}"
        );
        result
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    async fn cdp(&self, command: &str, params: Value) -> Value {
        self.browser
            .post(
                "/goog/cdp/execute",
                json!({"cmd": command, "params": params}),
            )
            .await
            .unwrap()
    }

    /// The whole page laid out `width` CSS pixels wide (a phone's viewport below 600),
    /// as a PNG.
    async fn full_page(&self, width: u32) -> Vec<u8> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}),
        )
        .await;
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(800.0)
            .clamp(300.0, 6000.0);
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
                }),
            )
            .await;
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }

    /// Signs up through the form: first with a password too short (the error stands
    /// next to its field), then properly.
    async fn sign_up(&self, email: &str) {
        self.goto("/account/signup").await;
        self.browser.type_into("#name", "Ada Shopper").await;
        self.browser.type_into("#email", email).await;
        self.browser.type_into("#password", "short").await;
        self.click("main form button[type=submit]").await;
        self.field_error("password").await;
        self.check("signup-errors").await;
        self.browser.type_into("#password", "password123").await;
        self.click("main form button[type=submit]").await;
        self.wait_for_path("home after sign-up", |p| p == "/").await;
        self.browser
            .wait_for_text("nav.account", "the signed-in links", |t| {
                t.contains("Sign out")
            })
            .await;
    }

    /// The error shown for input `id`: displayed, inside the input's own field, and
    /// tied to it (`aria-describedby`, `aria-invalid`).
    async fn field_error(&self, id: &str) -> String {
        let error = self
            .browser
            .wait_for_text(&format!("#{id}-error"), "a field error", |t| !t.is_empty())
            .await;
        let tied = self
            .browser
            .execute(&format!(
                "var input = document.getElementById('{id}');
                 var error = document.getElementById('{id}-error');
                 return input.parentElement.contains(error)
                   && input.getAttribute('aria-describedby') === '{id}-error'
                   && input.getAttribute('aria-invalid') === 'true';"
            ))
            .await
            .unwrap();
        assert_eq!(tied, true, "#{id}-error is next to #{id} and tied to it");
        error
    }

    /// Searches for `name` with the header's form and opens product `id` from the
    /// results; adds `quantity` of it to the cart, landing on the cart.
    async fn search_and_add(&self, name: &str, id: &str, quantity: u32) {
        self.browser.type_into("#q", name).await;
        self.click("form.search button").await;
        self.wait_for_path("the search results", |p| p.starts_with("/?q="))
            .await;
        let heading = self.heading().await;
        assert!(heading.contains(name), "{heading}");
        self.check("search").await;
        self.click(&format!("main a[href=\"/products/{id}\"]"))
            .await;
        self.wait_for_path("the product page", |p| p == format!("/products/{id}"))
            .await;
        assert_eq!(self.heading().await, name);
        self.check("product").await;
        self.browser
            .type_into("#quantity", &quantity.to_string())
            .await;
        self.click("form.add button").await;
        self.wait_for_path("the cart", |p| p == "/cart").await;
        self.check("cart").await;
    }

    /// Fills the checkout form, picks `card` and places the order: the order page's
    /// path, once the browser is on it.
    async fn check_out(&self, card: &str) -> String {
        self.goto("/checkout").await;
        assert_eq!(self.heading().await, "Checkout");
        self.browser.type_into("#name", "Ada Lovelace").await;
        self.browser.type_into("#line1", "1 Main St").await;
        self.browser.type_into("#city", "Springfield").await;
        self.browser.type_into("#postal_code", "12345").await;
        self.click(&format!("#card-{card}")).await;
        self.click("main form button[type=submit]").await;
        self.wait_for_path("the order page", |p| p.starts_with("/orders/"))
            .await
    }

    /// The order page's status (`data-status`) right now.
    async fn order_status(&self) -> String {
        self.browser
            .execute("var s = document.getElementById('order-status'); return s ? s.getAttribute('data-status') : '';")
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Marks the page's window: a mark still there later means the page was updated
    /// in place, not reloaded.
    async fn mark(&self) {
        self.browser
            .execute("window.bazaarTestMark = 'still here'; return null;")
            .await
            .unwrap();
    }

    async fn marked(&self) -> bool {
        self.browser
            .execute("return window.bazaarTestMark === 'still here';")
            .await
            .unwrap()
            == true
    }

    /// Waits (bounded) until the order page shows `status`; the status text.
    async fn wait_for_status(&self, status: &str) -> String {
        eventually_within(
            &format!("the order page to show {status}"),
            BROWSER_PATIENCE,
            || async {
                let now = self.order_status().await;
                if now == status {
                    self.browser.visible_text("#order-status").await
                } else {
                    Err(now)
                }
            },
        )
        .await
    }

    /// The order page's event timeline, once it holds `kind`.
    async fn timeline_with(&self, kind: &str) -> String {
        self.browser
            .wait_for_text(".timeline", "the order's timeline", |t| t.contains(kind))
            .await
    }
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The journeys, one app, two browsers. Payments that hang are cut off after 4 s and
/// the checkout answers after 100 ms, so the `tok_timeout` order is pending for
/// seconds: long enough for the page to be seen pending, then followed to `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_buys_in_the_browser_and_follows_each_order_live() {
    if let Err(reason) = browser_available() {
        eprintln!("skipping the shop's browser journeys: {reason}");
        return;
    }
    if postgres_url().is_some() && !split_topology() {
        // The pages do not change with the monolith's store, and CI time is short:
        // the journeys run on the monolith on SQLite and on the split (PostgreSQL).
        eprintln!("skipping the shop's browser journeys on the monolith on PostgreSQL");
        return;
    }
    let axe = axe_source();
    let app = spawn_app_with(|c| {
        c.set("payment_timeout_ms", 4_000);
        c.set("checkout_wait_ms", 100);
    })
    .await;
    let products = app.all_products(3).await;
    let (a, b) = (&products[0], &products[1]);
    let field = |p: &Value, key: &str| p[key].as_str().unwrap().to_owned();
    let price = |p: &Value| p["price_cents"].as_i64().unwrap();
    let checked = Checked::default();

    let shop = Shop::open(&app, axe.as_deref(), &checked).await;
    shop.goto("/").await;
    assert_eq!(shop.heading().await, "Products");
    shop.check("home").await;
    shop.sign_up("browser-shopper@example.com").await;

    // Two products, found by searching; then the first one's quantity goes to 3.
    shop.search_and_add(&field(a, "name"), &field(a, "id"), 1)
        .await;
    shop.search_and_add(&field(b, "name"), &field(b, "id"), 1)
        .await;
    let lines = shop.browser.find_all("table.lines tbody tr").await.unwrap();
    assert_eq!(lines.len(), 2);
    let quantity = format!("#qty-{}", field(a, "id"));
    shop.browser.type_into(&quantity, "3").await;
    shop.click(&format!(
        "form[action=\"/cart/items/{}\"] button",
        field(a, "id")
    ))
    .await;
    let total = money(3 * price(a) + price(b));
    shop.browser
        .wait_for_text("tfoot .total", "the new total", |t| t == total)
        .await;

    // Checkout: a missing city is shown next to the city field, the rest kept.
    shop.goto("/checkout").await;
    shop.check("checkout").await;
    shop.browser.type_into("#name", "Ada Lovelace").await;
    shop.browser.type_into("#line1", "1 Main St").await;
    shop.browser.type_into("#postal_code", "12345").await;
    shop.click("main form button[type=submit]").await;
    let city = shop.field_error("city").await;
    assert!(!city.is_empty());
    shop.check("checkout-errors").await;
    assert_eq!(
        shop.browser
            .execute("return document.getElementById('line1').value")
            .await
            .unwrap(),
        "1 Main St"
    );

    // tok_visa: the order page follows the order to confirmed, with its timeline.
    let confirmed = shop.check_out("tok_visa").await;
    let text = shop.wait_for_status("confirmed").await;
    assert!(text.contains("Confirmed"), "{text}");
    shop.timeline_with("Order confirmed").await;
    shop.check("order-confirmed").await;
    shop.goto("/cart").await;
    shop.browser
        .wait_for_text("main", "the emptied cart", |t| {
            t.contains("Your cart is empty")
        })
        .await;

    // tok_chargeDeclined: failed, and why.
    shop.goto(&format!("/products/{}", field(a, "id"))).await;
    shop.click("form.add button").await;
    shop.wait_for_path("the cart", |p| p == "/cart").await;
    let declined = shop.check_out("tok_chargeDeclined").await;
    let text = shop.wait_for_status("failed").await;
    assert!(text.contains("the card was declined"), "{text}");
    shop.check("order-failed").await;

    // tok_timeout: pending (the page says it is following the order), then failed,
    // updated in place by order.js: the window's mark survives.
    shop.goto(&format!("/products/{}", field(b, "id"))).await;
    shop.click("form.add button").await;
    shop.wait_for_path("the cart", |p| p == "/cart").await;
    let slow = shop.check_out("tok_timeout").await;
    assert_eq!(shop.order_status().await, "pending", "{slow}");
    shop.mark().await;
    let text = shop.browser.visible_text("#order-status").await.unwrap();
    assert!(text.contains("Processing"), "{text}");
    shop.check("order-pending").await;
    let text = shop.wait_for_status("failed").await;
    assert!(text.contains("could not be reached"), "{text}");
    assert!(
        shop.marked().await,
        "the pending order was followed without a reload"
    );
    assert_eq!(shop.browser.path().await, slow);
    shop.timeline_with("Order failed").await;

    // The history lists all three.
    shop.goto("/orders").await;
    let history = shop
        .browser
        .wait_for_text("main", "the order history", |t| t.contains("confirmed"))
        .await;
    for path in [&confirmed, &declined, &slow] {
        let id = path.trim_start_matches("/orders/");
        assert!(history.contains(id), "{id} in {history}");
    }
    shop.check("orders").await;

    // A second browser (its own cookies): signed out, the orders ask to sign in;
    // signed up as someone else, none of the first shopper's orders is there.
    let stranger = Shop::open(&app, axe.as_deref(), &checked).await;
    stranger.goto("/orders").await;
    stranger
        .wait_for_path("the sign-in page", |p| p.starts_with("/account/signin"))
        .await;
    stranger.check("signin").await;
    stranger.sign_up("browser-stranger@example.com").await;
    stranger.goto("/orders").await;
    stranger
        .browser
        .wait_for_text("main", "an empty history", |t| t.contains("No orders yet"))
        .await;
    for path in [&confirmed, &declined, &slow] {
        stranger.goto(path).await;
        assert_eq!(stranger.heading().await, "Page not found", "{path}");
    }
    stranger.check("not-found").await;
    // A path no module owns: the edge's own 404, as a page too.
    stranger.goto("/no/such/page").await;
    assert_eq!(stranger.heading().await, "Page not found");
    stranger.check("edge-not-found").await;

    // The check itself can fail: an image without a text alternative on this page
    // is a critical violation to axe.
    if let Some(axe) = axe.as_deref() {
        stranger
            .browser
            .execute("var img = document.createElement('img'); img.src = '/assets/none.png'; document.querySelector('main').appendChild(img); return null;")
            .await
            .unwrap();
        let result = stranger.axe(axe).await;
        let found = result["serious"].to_string();
        assert!(found.contains("image-alt (critical)"), "{result}");
    }

    eprintln!(
        "shop journeys{}: pages checked{}: {:?}; screenshots in {}",
        variant(&app),
        if axe.is_some() { " with axe" } else { "" },
        checked.lock().unwrap(),
        ci_dir().join("screenshots").display()
    );
    stranger.browser.quit().await;
    shop.browser.quit().await;
}
