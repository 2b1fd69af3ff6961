//! The shopper: what each operation sends to the public API (or, for the web mix, the
//! storefront's pages), and the set-up it needs (registered users, known product ids).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use loadreport::StatusClass;
use rand::Rng;
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::LoadgenError;
use crate::mix::Operation;
use crate::recorder::OrderSeen;
use crate::scheduler::Step;

/// Listing pages read up front to learn product ids.
const PRODUCT_PAGES: usize = 5;
/// Registrations in flight at once while the user pool is made (argon2 is costly).
const REGISTER_CONCURRENCY: usize = 4;

struct User {
    token: String,
    /// The shop's cookies for the web mix: the session (the token, as the storefront
    /// keeps it) and a CSRF token of this run's making, repeated in every form.
    cookies: String,
    csrf: String,
    /// Whether the cart (as far as this run knows) has something to check out.
    cart_filled: AtomicBool,
}

/// One arrival, decided by the scheduler's RNG before it is sent.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    op: Operation,
    user: Option<usize>,
    product: usize,
}

pub(crate) struct Shopper {
    client: Client,
    base: String,
    products: Vec<String>,
    users: Vec<User>,
    /// Unique per run: the users' emails and the checkouts' idempotency keys.
    run_id: String,
    checkouts: AtomicU64,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<ProductId>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ProductId {
    id: String,
}

#[derive(Deserialize)]
struct Registered {
    token: String,
}

impl Shopper {
    /// Learns product ids and registers `users` users.
    pub(crate) async fn prepare(
        base: &str,
        timeout: Duration,
        users: u32,
        seed: u64,
    ) -> Result<Self, LoadgenError> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            // The shop's forms answer 303: the answer is what is measured, not the
            // page it points to.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(LoadgenError::Client)?;
        let products = product_ids(&client, base).await?;
        let run_id = format!(
            "{:x}{:08x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            seed & 0xffff_ffff
        );
        let mut registered = Vec::new();
        let indices: Vec<u32> = (0..users).collect();
        for chunk in indices.chunks(REGISTER_CONCURRENCY) {
            let mut batch = tokio::task::JoinSet::new();
            for i in chunk {
                let (client, base) = (client.clone(), base.to_owned());
                let email = format!("loadgen-{run_id}-{i}@example.com");
                batch.spawn(async move { register(&client, &base, &email).await });
            }
            while let Some(token) = batch.join_next().await {
                let token = token.map_err(LoadgenError::RegisterTask)??;
                let csrf = csrf_token(&mut rand::thread_rng());
                registered.push(User {
                    cookies: shop_cookies(&token, &csrf),
                    token,
                    csrf,
                    cart_filled: AtomicBool::new(false),
                });
            }
        }
        Ok(Self {
            client,
            base: base.to_owned(),
            products,
            users: registered,
            run_id,
            checkouts: AtomicU64::new(0),
        })
    }

    pub(crate) fn product_count(&self) -> usize {
        self.products.len()
    }

    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The arrival `i` (open loop) or a request of user `i` (closed loop): `op` for
    /// user `i` mod the pool, on a random known product.
    pub(crate) fn plan(&self, op: Operation, i: u64, rng: &mut impl Rng) -> Plan {
        let user = (!self.users.is_empty())
            .then(|| usize::try_from(i % self.users.len() as u64).unwrap_or(0));
        Plan {
            op,
            user,
            product: rng.gen_range(0..self.products.len().max(1)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn product(&self, plan: &Plan) -> &str {
        self.products.get(plan.product).map_or("", String::as_str)
    }

    /// Sends the planned request(s); a checkout on an empty cart first adds an item
    /// (recorded as an add to cart).
    pub(crate) async fn perform(self: Arc<Self>, plan: Plan) -> Vec<Step> {
        let user = plan.user.and_then(|u| self.users.get(u));
        let auth = |request: RequestBuilder| match user {
            Some(user) => request.bearer_auth(&user.token),
            None => request,
        };
        let signed_in = |request: RequestBuilder| match user {
            Some(user) => request.header(reqwest::header::COOKIE, &user.cookies),
            None => request,
        };
        let page = |op: Operation, path: &str| send(op, signed_in(self.client.get(self.url(path))));
        let add = || {
            auth(self.client.post(self.url("/api/v1/cart/items")))
                .json(&json!({"product_id": self.product(&plan), "quantity": 1}))
        };
        match plan.op {
            Operation::Listing => {
                vec![
                    send(
                        Operation::Listing,
                        self.client.get(self.url("/api/v1/products?limit=20")),
                    )
                    .await
                    .0,
                ]
            }
            Operation::ProductView => {
                let path = format!("/api/v1/products/{}", self.product(&plan));
                vec![
                    send(Operation::ProductView, self.client.get(self.url(&path)))
                        .await
                        .0,
                ]
            }
            Operation::ViewCart => {
                vec![
                    send(
                        Operation::ViewCart,
                        auth(self.client.get(self.url("/api/v1/cart"))),
                    )
                    .await
                    .0,
                ]
            }
            Operation::AddToCart => {
                let (step, status) = send(Operation::AddToCart, add()).await;
                if let (Some(user), Some(200..=299)) = (user, status) {
                    user.cart_filled.store(true, Ordering::Relaxed);
                }
                vec![step]
            }
            Operation::WebHome => vec![page(Operation::WebHome, "/").await.0],
            Operation::WebProduct => {
                let path = format!("/products/{}", self.product(&plan));
                vec![page(Operation::WebProduct, &path).await.0]
            }
            Operation::WebCart => vec![page(Operation::WebCart, "/cart").await.0],
            Operation::WebCheckoutForm => {
                vec![page(Operation::WebCheckoutForm, "/checkout").await.0]
            }
            Operation::WebAddToCart => {
                let csrf = user.map_or("", |u| u.csrf.as_str());
                let few = WEB_CART_PRODUCTS.min(self.products.len()).max(1);
                let product = self
                    .products
                    .get(plan.product % few)
                    .map_or("", String::as_str);
                let request = signed_in(self.client.post(self.url("/cart/items")))
                    .form(&add_form(product, csrf));
                vec![send(Operation::WebAddToCart, request).await.0]
            }
            Operation::Checkout => {
                let mut steps = Vec::with_capacity(2);
                if let Some(user) = user {
                    if !user.cart_filled.load(Ordering::Relaxed) {
                        let (step, status) = send(Operation::AddToCart, add()).await;
                        steps.push(step);
                        if !matches!(status, Some(200..=299)) {
                            return steps;
                        }
                    }
                    // Whatever the outcome, the next checkout refills first: a
                    // confirmed order empties the cart, a failed one may leave it full.
                    user.cart_filled.store(false, Ordering::Relaxed);
                }
                let key = format!(
                    "loadgen-{}-{}",
                    self.run_id,
                    self.checkouts.fetch_add(1, Ordering::Relaxed)
                );
                let request = auth(self.client.post(self.url("/api/v1/orders")))
                    .header("idempotency-key", key)
                    .json(&json!({
                        "payment_token": "tok_visa",
                        "shipping_address": {
                            "name": "Ada Lovelace",
                            "line1": "12 St James Square",
                            "city": "London",
                            "postal_code": "SW1Y 4JH",
                            "country": "GB",
                        },
                    }));
                let (mut step, status, body) =
                    send_reading(Operation::Checkout, request, true).await;
                if let (Some(status), Some(body)) = (status, body) {
                    step.order = OrderSeen::of_answer(status, &body, plan.user.unwrap_or(0));
                    step.order_id = order_id(status, &body);
                }
                steps.push(step);
                steps
            }
        }
    }
}

impl Shopper {
    /// Reads the orders that were still pending when their checkout answered, until
    /// each has ended or `patience` has passed: what each became (or still pending).
    pub(crate) async fn settle(
        self: &Arc<Self>,
        pending: Vec<(usize, String)>,
        patience: Duration,
    ) -> Vec<OrderSeen> {
        const READS_AT_ONCE: usize = 16;
        const POLL: Duration = Duration::from_millis(200);
        let deadline = Instant::now() + patience;
        let mut waiting = pending;
        let mut ended = Vec::with_capacity(waiting.len());
        loop {
            let mut still = Vec::new();
            for chunk in waiting.chunks(READS_AT_ONCE) {
                let mut reads = tokio::task::JoinSet::new();
                for (user, id) in chunk.iter().cloned() {
                    let shopper = Arc::clone(self);
                    reads.spawn(async move { shopper.read_order(user, id).await });
                }
                while let Some(read) = reads.join_next().await {
                    match read {
                        Ok(OrderSeen::Pending { user, id }) => still.push((user, id)),
                        Ok(seen) => ended.push(seen),
                        Err(_) => {}
                    }
                }
            }
            waiting = still;
            if waiting.is_empty() || Instant::now() + POLL >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        ended.extend(
            waiting
                .into_iter()
                .map(|(user, id)| OrderSeen::Pending { user, id }),
        );
        ended
    }

    /// The order as its owner reads it; still pending when it cannot be read.
    async fn read_order(&self, user: usize, id: String) -> OrderSeen {
        let Some(owner) = self.users.get(user) else {
            return OrderSeen::Pending { user, id };
        };
        let url = self.url(&format!("/api/v1/orders/{id}"));
        let answer = self.client.get(url).bearer_auth(&owner.token).send().await;
        let order = match answer {
            Ok(response) if response.status().is_success() => {
                response.json::<OrderBody>().await.ok()
            }
            _ => None,
        };
        order
            .and_then(|order| OrderSeen::of_status(&order, user))
            .unwrap_or(OrderSeen::Pending { user, id })
    }
}

/// A CSRF token as the shop's cookie holds one (32 to 64 characters): 64 hex digits.
fn csrf_token(rng: &mut impl Rng) -> String {
    format!("{:032x}{:032x}", rng.r#gen::<u128>(), rng.r#gen::<u128>())
}

/// The `Cookie` header of a signed-in shopper of the storefront: the access token in
/// the session cookie and the CSRF cookie its forms repeat (double submit).
fn shop_cookies(token: &str, csrf: &str) -> String {
    format!("__Host-bazaar_session={token}; __Host-bazaar_csrf={csrf}")
}

/// The product page's add-to-cart form, as a browser posts it.
fn add_form<'a>(product_id: &'a str, csrf: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("product_id", product_id),
        ("quantity", "1"),
        ("csrf", csrf),
    ]
}

/// Sends one request and reads its whole body (so the connection is reused).
async fn send(op: Operation, request: RequestBuilder) -> (Step, Option<u16>) {
    let (step, status, _) = send_reading(op, request, false).await;
    (step, status)
}

/// [`send`], also handing back the body when `keep_body` (only checkouts need it).
async fn send_reading(
    op: Operation,
    request: RequestBuilder,
    keep_body: bool,
) -> (Step, Option<u16>, Option<Vec<u8>>) {
    let (class, status, body) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(body) => (
                    StatusClass::of(status),
                    Some(status),
                    keep_body.then(|| body.to_vec()),
                ),
                Err(_) => (StatusClass::Transport, None, None),
            }
        }
        Err(_) => (StatusClass::Transport, None, None),
    };
    (
        Step {
            op,
            class,
            status,
            order_id: None,
            finished: Instant::now(),
            order: None,
        },
        status,
        body,
    )
}

/// The id of the order a 2xx checkout answer describes.
fn order_id(status: u16, body: &[u8]) -> Option<String> {
    if !(200..=299).contains(&status) {
        return None;
    }
    serde_json::from_slice::<OrderBody>(body).ok().map(|o| o.id)
}

/// The fields of an order that say how it ended.
#[derive(Deserialize)]
struct OrderBody {
    id: String,
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
}

impl OrderSeen {
    /// What a checkout answer (`201` terminal or `202` pending, with the order as its
    /// body) says; `None` for any other answer (no order, or one this run cannot
    /// follow).
    pub(crate) fn of_answer(status: u16, body: &[u8], user: usize) -> Option<Self> {
        if !(200..=299).contains(&status) {
            return None;
        }
        let order: OrderBody = serde_json::from_slice(body).ok()?;
        Self::of_status(&order, user)
    }

    fn of_status(order: &OrderBody, user: usize) -> Option<Self> {
        match order.status.as_str() {
            // Cancelled only follows confirmed, and this run cancels nothing: count
            // it as what it was before, confirmed.
            "confirmed" | "cancelled" => Some(Self::Confirmed),
            "failed" => Some(Self::Failed(
                order
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| "unknown".to_owned()),
            )),
            "pending" => Some(Self::Pending {
                user,
                id: order.id.clone(),
            }),
            _ => None,
        }
    }
}

/// Up to [`PRODUCT_PAGES`] pages of the listing.
async fn product_ids(client: &Client, base: &str) -> Result<Vec<String>, LoadgenError> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PRODUCT_PAGES {
        let mut request = client
            .get(format!("{base}/api/v1/products"))
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let response = request.send().await.map_err(|source| LoadgenError::Reach {
            base: base.to_owned(),
            source,
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(LoadgenError::ListingStatus {
                base: base.to_owned(),
                status,
            });
        }
        let page: Page = response.json().await.map_err(LoadgenError::Listing)?;
        ids.extend(page.items.into_iter().map(|p| p.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if ids.is_empty() {
        return Err(LoadgenError::NoProducts {
            base: base.to_owned(),
        });
    }
    Ok(ids)
}

/// The distinct products a web shopper's cart holds at most: the web mix places no
/// order, so its carts only grow; drawn from these few they stay a realistic size
/// (the cart page renders every line) and far below the cart's 100-product limit.
const WEB_CART_PRODUCTS: usize = 10;

/// Registration attempts per user before giving up on a throttled server.
const REGISTER_ATTEMPTS: u32 = 30;

async fn register(client: &Client, base: &str, email: &str) -> Result<String, LoadgenError> {
    for _ in 0..REGISTER_ATTEMPTS {
        let response = client
            .post(format!("{base}/api/v1/auth/register"))
            .json(
                &json!({"email": email, "password": "loadgen-password", "name": "Load Generator"}),
            )
            .send()
            .await
            .map_err(|source| LoadgenError::Register {
                email: email.to_owned(),
                source,
            })?;
        let status = response.status();
        // The edge limits sign-ups per client (429) and identity sheds hashing it has
        // no room for (503), both with Retry-After: setting up the users waits.
        if matches!(status.as_u16(), 429 | 503) {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 5);
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        if status.as_u16() != 201 {
            let body = response.text().await.unwrap_or_default();
            return Err(LoadgenError::RegisterStatus {
                email: email.to_owned(),
                status,
                body,
            });
        }
        let registered =
            response
                .json::<Registered>()
                .await
                .map_err(|source| LoadgenError::RegisterAnswer {
                    email: email.to_owned(),
                    source,
                })?;
        return Ok(registered.token);
    }
    Err(LoadgenError::Throttled {
        email: email.to_owned(),
        attempts: REGISTER_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn web_shoppers_post_forms_as_the_shop_expects() {
        let mut rng = StdRng::seed_from_u64(3);
        let csrf = csrf_token(&mut rng);
        // The storefront accepts a CSRF cookie of 32 to 64 characters.
        assert_eq!(csrf.len(), 64);
        assert!(csrf.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(csrf, csrf_token(&mut rng));
        let cookies = shop_cookies("a.b.c", &csrf);
        assert_eq!(
            cookies,
            format!("__Host-bazaar_session=a.b.c; __Host-bazaar_csrf={csrf}")
        );
        // The form repeats the cookie's token, as the product page's form does.
        let form = add_form("p1", &csrf);
        assert!(form.contains(&("csrf", csrf.as_str())));
        assert!(form.contains(&("product_id", "p1")));
    }
}
