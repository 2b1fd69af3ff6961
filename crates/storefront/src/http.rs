//! The shop's routes: each page asks the contracts, renders, and gets the headers every
//! page of the shop carries. Forms post (no JavaScript); a post that changes state
//! checks the CSRF token first, then answers with a redirect (post/redirect/get) or,
//! when the input was wrong, the form again with its errors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chassis::auth::{ClientIp, Principal, Tokens};
use contracts::cart::{CartApi, CartError};
use contracts::catalog::{CatalogApi, CatalogError, Product};
use contracts::identity::{AccountError, IdentityApi, SignedIn};
use contracts::orders::{OrderError, OrdersApi, ShippingAddress};
use maud::Markup;
use serde::Deserialize;

use crate::pages::{self, CartLine, Errors};
use crate::session::{self, Visit};

/// The public path prefixes the shop owns (the split gateway routes them to it): the
/// home page exactly, and the pages below these.
pub(crate) const PREFIXES: &[&str] = &[
    "/",
    "/products",
    "/cart",
    "/checkout",
    "/orders",
    "/account",
    "/assets",
];

/// The stylesheet's path. Compiled in, so a page and its stylesheet always match.
pub(crate) const STYLESHEET: &str = "/assets/shop.css";

/// The order page's script (follows a pending order live), compiled in likewise.
pub(crate) const ORDER_SCRIPT: &str = "/assets/order.js";

/// Where a shopper who must sign in is sent.
const SIGN_IN: &str = "/account/signin";

/// Products per page on the home page.
const PAGE_SIZE: u32 = 12;

/// No inline code, no frame, no foreign origin: the pages need only their own
/// stylesheet and script, to fetch the order page again (the script) and to post their
/// forms back to the shop.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// What the pages call.
#[derive(Clone)]
pub(crate) struct Shop {
    pub(crate) catalog: Arc<dyn CatalogApi>,
    pub(crate) cart: Arc<dyn CartApi>,
    pub(crate) identity: Arc<dyn IdentityApi>,
    pub(crate) orders: Arc<dyn OrdersApi>,
    /// Verifies the session cookie's token.
    pub(crate) tokens: Tokens,
}

chassis::debug_fields!(Shop {});

impl FromRef<Shop> for Tokens {
    fn from_ref(shop: &Shop) -> Self {
        shop.tokens.clone()
    }
}

impl FromRequestParts<Shop> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, shop: &Shop) -> Result<Self, Self::Rejection> {
        Ok(Visit::from_headers(&parts.headers, &shop.tokens))
    }
}

/// A posted form; one that does not parse is the shopper's mistake, shown as a page.
struct ShopForm<T>(T);

impl<T> FromRequest<Shop> for ShopForm<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ShopError;

    async fn from_request(request: Request, shop: &Shop) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(request, shop).await {
            Ok(axum::Form(form)) => Ok(ShopForm(form)),
            Err(rejection) => Err(ShopError::BadRequest(form_problem(&rejection))),
        }
    }
}

fn form_problem(rejection: &FormRejection) -> String {
    format!("The form could not be read: {}", rejection.body_text())
}

pub(crate) fn router(shop: Shop) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/products/{id}", get(product))
        .route("/account/signup", get(sign_up_form).post(sign_up))
        .route("/account/signin", get(sign_in_form).post(sign_in))
        .route("/account/signout", post(sign_out))
        .route("/cart", get(cart))
        .route("/cart/items", post(cart_add))
        .route("/cart/items/{product_id}", post(cart_set))
        .route("/cart/items/{product_id}/remove", post(cart_remove))
        .route("/checkout", get(checkout_form).post(checkout))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/cancel", post(cancel))
        .route(STYLESHEET, get(stylesheet))
        .route(ORDER_SCRIPT, get(order_script))
        .route("/assets/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn_with_state(
            shop.clone(),
            renew_session,
        ))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(shop)
}

/// Renews an expired session before the page sees it: a request without a valid
/// session cookie but with a refresh cookie trades the refresh token for a new pair,
/// is handled as signed in, and its response sets both new cookies. A refresh token
/// identity no longer accepts is forgotten (the shopper signs in again); identity
/// unreachable leaves the cookies for the next request. A response that signs in or
/// out itself keeps its own cookies. Refresh tokens are single use: two requests
/// renewing at once (two tabs) end the session, as a stolen token would.
async fn renew_session(
    State(shop): State<Shop>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let expired = session::cookie(headers, session::SESSION_COOKIE)
        .and_then(|token| shop.tokens.verify(token))
        .is_none();
    let refresh = session::cookie(headers, session::REFRESH_COOKIE)
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let (true, Some(refresh), false) = (
        expired,
        refresh,
        request.uri().path().starts_with("/assets/"),
    ) else {
        return next.run(request).await;
    };
    let renewed = shop.identity.refresh(refresh).await;
    if let Ok(signed) = &renewed {
        session::use_session(request.headers_mut(), &signed.token);
    }
    let mut response = next.run(request).await;
    if session::sets_session(response.headers()) {
        return response;
    }
    match renewed {
        Ok(signed) => session::start(response.headers_mut(), &signed),
        Err(AccountError::InvalidCredentials) => session::end(response.headers_mut()),
        Err(e) => tracing::warn!(error = %e, "renewing a session failed"),
    }
    response
}

/// The shop's failures, each a page in the shop's style.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShopError {
    #[error("There is no such page.")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "This form has expired or did not come from this shop. Go back, reload the page and try again."
    )]
    Forbidden,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("The shop cannot reach one of its services right now. Please try again shortly.")]
    Unavailable(String),
}

impl From<CatalogError> for ShopError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound(_) => ShopError::NotFound,
            CatalogError::Invalid(why) => ShopError::BadRequest(why),
            other => ShopError::Unavailable(other.to_string()),
        }
    }
}

impl From<CartError> for ShopError {
    fn from(error: CartError) -> Self {
        match error {
            CartError::Refused(why) => ShopError::BadRequest(why),
            CartError::Unavailable(why) => ShopError::Unavailable(why),
        }
    }
}

impl From<OrderError> for ShopError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::NotFound(_) => ShopError::NotFound,
            OrderError::Invalid(errors) => ShopError::BadRequest(
                errors
                    .into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            OrderError::Refused(why) => ShopError::Conflict(why),
            OrderError::Unavailable(why) => ShopError::Unavailable(why),
        }
    }
}

impl IntoResponse for ShopError {
    fn into_response(self) -> Response {
        let status = match &self {
            ShopError::NotFound => StatusCode::NOT_FOUND,
            ShopError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ShopError::Forbidden => StatusCode::FORBIDDEN,
            ShopError::Conflict(_) => StatusCode::CONFLICT,
            ShopError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ShopError::Unavailable(why) => {
                tracing::warn!(error = %why, "a page's service call failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, pages::error(status, &self.to_string())).into_response()
    }
}

/// Every shop response: the CSP and its companions, and pages revalidated on every
/// load and kept by no shared cache (they show stock, a shopper's cart and orders).
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    response
}

/// A page for `visit`, setting its CSRF cookie when new.
fn page(visit: &Visit, status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup).into_response();
    visit.set_cookies(response.headers_mut());
    response
}

/// The sign-in page, which comes back to `back_to` (a path of this site) after.
fn sign_in_first(back_to: &str) -> Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", local(back_to))
        .finish();
    Redirect::to(&format!("{SIGN_IN}?{query}")).into_response()
}

/// A signed-in shopper's page request; a visitor is sent to sign in and back here.
struct ShopperPage {
    visit: Visit,
    user: Principal,
}

impl FromRequestParts<Shop> for ShopperPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shop: &Shop) -> Result<Self, Self::Rejection> {
        let visit = Visit::from_headers(&parts.headers, &shop.tokens);
        match visit.shopper.clone() {
            Some(user) => Ok(ShopperPage { visit, user }),
            None => Err(sign_in_first(
                parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            )),
        }
    }
}

/// A form that carries the CSRF token (its hidden `csrf` field).
trait Guarded {
    fn csrf(&self) -> &str;
}

/// A posted form whose CSRF field matched the visit's cookie: checked right after the
/// form is parsed and before any of it is acted on, so a forged form does nothing (a
/// malformed one, forged or not, is refused as malformed first).
struct Posted<T> {
    visit: Visit,
    form: T,
}

impl<T> FromRequest<Shop> for Posted<T>
where
    T: serde::de::DeserializeOwned + Guarded + Send,
{
    type Rejection = ShopError;

    async fn from_request(request: Request, shop: &Shop) -> Result<Self, Self::Rejection> {
        let visit = Visit::from_headers(request.headers(), &shop.tokens);
        let ShopForm(form) = ShopForm::<T>::from_request(request, shop).await?;
        if visit.csrf_ok(form.csrf()) {
            Ok(Posted { visit, form })
        } else {
            Err(ShopError::Forbidden)
        }
    }
}

/// A signed-in shopper's posted form, its CSRF field checked before anything is done.
/// A visitor is sent to sign in and then back to the page the form was on (its
/// same-origin `Referer`).
struct ShopperPost<T> {
    visit: Visit,
    user: Principal,
    form: T,
}

impl<T> FromRequest<Shop> for ShopperPost<T>
where
    T: serde::de::DeserializeOwned + Guarded + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, shop: &Shop) -> Result<Self, Self::Rejection> {
        let back_to = request
            .headers()
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .map_or("/", referer_path)
            .to_owned();
        let Posted { visit, form } = Posted::<T>::from_request(request, shop)
            .await
            .map_err(IntoResponse::into_response)?;
        match visit.shopper.clone() {
            Some(user) => Ok(ShopperPost { visit, user, form }),
            None => Err(sign_in_first(&back_to)),
        }
    }
}

/// A `Referer`'s path and query (`local` then decides whether it is this site's).
fn referer_path(referer: &str) -> &str {
    match referer.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => referer,
    }
}

/// The home page's query: a search and a page.
#[derive(Debug, Default, Deserialize)]
struct Browse {
    q: Option<String>,
    cursor: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn home(
    State(shop): State<Shop>,
    visit: Visit,
    Query(browse): Query<Browse>,
) -> Result<Response, ShopError> {
    let q = browse.q.filter(|q| !q.trim().is_empty());
    let cursor = browse.cursor.filter(|c| !c.is_empty());
    let first_page = cursor.is_none();
    let page_of = shop
        .catalog
        .list_products(q.clone(), cursor, PAGE_SIZE)
        .await?;
    Ok(page(
        &visit,
        StatusCode::OK,
        pages::home(&visit, q.as_deref(), &page_of, first_page),
    ))
}

#[tracing::instrument(skip_all)]
async fn product(
    State(shop): State<Shop>,
    visit: Visit,
    Path(id): Path<String>,
) -> Result<Response, ShopError> {
    let product = shop.catalog.get_product(id).await?;
    Ok(page(
        &visit,
        StatusCode::OK,
        pages::product(&visit, &product),
    ))
}

/// The sign-up and sign-in forms' fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Account {
    csrf: String,
    pub(crate) email: String,
    password: String,
    pub(crate) name: String,
    /// Sign-in only: the page to go back to.
    pub(crate) next: String,
}

impl Guarded for Account {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn sign_up_form(visit: Visit) -> Response {
    page(
        &visit,
        StatusCode::OK,
        pages::sign_up(&visit, &Account::default(), &Errors::default()),
    )
}

/// Where the sign-in form goes back to.
#[derive(Debug, Default, Deserialize)]
struct Next {
    next: Option<String>,
}

/// `next` if it is a path of this site, else the home page: never an open redirect
/// (`//evil.example` and `/\\evil.example` are other sites to a browser).
/// Only visible ASCII: it goes into a `Location` header as it is.
fn local(next: &str) -> &str {
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic())
    {
        next
    } else {
        "/"
    }
}

async fn sign_in_form(visit: Visit, Query(back): Query<Next>) -> Response {
    let form = Account {
        next: back.next.unwrap_or_default(),
        ..Account::default()
    };
    page(&visit, StatusCode::OK, pages::sign_in(&visit, &form, None))
}

/// Signed in: the session cookies, then `next` (a path of this site) or the home page.
fn signed_in(signed: &SignedIn, next: &str) -> Response {
    let mut response = Redirect::to(local(next)).into_response();
    session::start(response.headers_mut(), signed);
    response
}

#[tracing::instrument(skip_all)]
async fn sign_up(
    State(shop): State<Shop>,
    ClientIp(client): ClientIp,
    Posted { visit, form }: Posted<Account>,
) -> Result<Response, ShopError> {
    let result = shop
        .identity
        .sign_up(
            form.email.clone(),
            form.password.clone(),
            form.name.clone(),
            client,
        )
        .await;
    let errors = match result {
        Ok(signed) => return Ok(signed_in(&signed, "/")),
        Err(AccountError::Invalid(errors)) => Errors::from(errors),
        Err(AccountError::EmailTaken) => Errors::one(
            "email",
            "An account with this email already exists: sign in instead.",
        ),
        Err(AccountError::Throttled { retry_after_secs }) => {
            return Err(ShopError::TooMany(format!(
                "Too many attempts. Wait {retry_after_secs} seconds and try again."
            )));
        }
        Err(e @ (AccountError::InvalidCredentials | AccountError::Unavailable(_))) => {
            return Err(ShopError::Unavailable(e.to_string()));
        }
    };
    Ok(page(
        &visit,
        StatusCode::UNPROCESSABLE_ENTITY,
        pages::sign_up(&visit, &form, &errors),
    ))
}

#[tracing::instrument(skip_all)]
async fn sign_in(
    State(shop): State<Shop>,
    ClientIp(client): ClientIp,
    Posted { visit, form }: Posted<Account>,
) -> Result<Response, ShopError> {
    match shop
        .identity
        .sign_in(form.email.clone(), form.password.clone(), client)
        .await
    {
        Ok(signed) => Ok(signed_in(&signed, &form.next)),
        Err(AccountError::InvalidCredentials | AccountError::Invalid(_)) => Ok(page(
            &visit,
            StatusCode::UNAUTHORIZED,
            pages::sign_in(&visit, &form, Some("Wrong email or password.")),
        )),
        Err(AccountError::Throttled { retry_after_secs }) => Err(ShopError::TooMany(format!(
            "Too many failed sign-ins. Wait {retry_after_secs} seconds and try again."
        ))),
        Err(e @ (AccountError::EmailTaken | AccountError::Unavailable(_))) => {
            Err(ShopError::Unavailable(e.to_string()))
        }
    }
}

/// A form whose only field is its CSRF token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Plain {
    csrf: String,
}

impl Guarded for Plain {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[tracing::instrument(skip_all)]
async fn sign_out(
    State(shop): State<Shop>,
    Posted { visit, .. }: Posted<Plain>,
) -> Result<Response, ShopError> {
    if let Some(shopper) = &visit.shopper {
        // Its refresh tokens are revoked; the cookie goes either way.
        if let Err(e) = shop
            .identity
            .sign_out(shopper.user_id.clone(), shopper.session_id.clone())
            .await
        {
            tracing::warn!(error = %e, "ending the session failed");
        }
    }
    let mut response = Redirect::to("/").into_response();
    session::end(response.headers_mut());
    Ok(response)
}

/// The products of `ids`, by id.
async fn products(shop: &Shop, ids: Vec<String>) -> Result<HashMap<String, Product>, ShopError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(shop
        .catalog
        .get_products(ids)
        .await?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect())
}

/// The shopper's cart, priced now; lines whose product is gone are left out.
async fn cart_lines(shop: &Shop, user_id: &str) -> Result<Vec<CartLine>, ShopError> {
    let items = shop.cart.items(user_id.to_owned()).await?;
    let found = products(shop, items.iter().map(|i| i.product_id.clone()).collect()).await?;
    Ok(items
        .into_iter()
        .filter_map(|item| {
            found.get(&item.product_id).map(|product| CartLine {
                product: product.clone(),
                quantity: item.quantity,
            })
        })
        .collect())
}

#[tracing::instrument(skip_all)]
async fn cart(
    State(shop): State<Shop>,
    ShopperPage { visit, user }: ShopperPage,
) -> Result<Response, ShopError> {
    let lines = cart_lines(&shop, &user.user_id).await?;
    Ok(page(&visit, StatusCode::OK, pages::cart(&visit, &lines)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AddItem {
    csrf: String,
    product_id: String,
    quantity: u32,
}

impl Guarded for AddItem {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[tracing::instrument(skip_all)]
async fn cart_add(
    State(shop): State<Shop>,
    ShopperPost { user, form, .. }: ShopperPost<AddItem>,
) -> Result<Response, ShopError> {
    shop.cart
        .add_item(user.user_id, form.product_id, form.quantity)
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SetQuantity {
    csrf: String,
    quantity: u32,
}

impl Guarded for SetQuantity {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[tracing::instrument(skip_all)]
async fn cart_set(
    State(shop): State<Shop>,
    Path(product_id): Path<String>,
    ShopperPost { user, form, .. }: ShopperPost<SetQuantity>,
) -> Result<Response, ShopError> {
    shop.cart
        .set_quantity(user.user_id, product_id, form.quantity)
        .await?;
    Ok(Redirect::to("/cart").into_response())
}

#[tracing::instrument(skip_all)]
async fn cart_remove(
    State(shop): State<Shop>,
    Path(product_id): Path<String>,
    ShopperPost { user, .. }: ShopperPost<Plain>,
) -> Result<Response, ShopError> {
    shop.cart.set_quantity(user.user_id, product_id, 0).await?;
    Ok(Redirect::to("/cart").into_response())
}

/// The checkout form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Checkout {
    csrf: String,
    /// The order's idempotency key, made when the form was: posting the same form
    /// twice (a double click, a retry) places one order.
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) line1: String,
    pub(crate) line2: String,
    pub(crate) city: String,
    pub(crate) postal_code: String,
    pub(crate) country: String,
    pub(crate) payment_token: String,
}

impl Guarded for Checkout {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Checkout {
    fn fresh() -> Self {
        Self {
            key: chassis::id::new_id(),
            country: "US".to_owned(),
            payment_token: "tok_visa".to_owned(),
            ..Self::default()
        }
    }
}

async fn checkout_page(
    shop: &Shop,
    visit: &Visit,
    user: &Principal,
    status: StatusCode,
    form: &Checkout,
    errors: &Errors,
) -> Result<Response, ShopError> {
    let lines = cart_lines(shop, &user.user_id).await?;
    Ok(page(
        visit,
        status,
        pages::checkout(visit, &lines, form, errors),
    ))
}

#[tracing::instrument(skip_all)]
async fn checkout_form(
    State(shop): State<Shop>,
    ShopperPage { visit, user }: ShopperPage,
) -> Result<Response, ShopError> {
    checkout_page(
        &shop,
        &visit,
        &user,
        StatusCode::OK,
        &Checkout::fresh(),
        &Errors::default(),
    )
    .await
}

#[tracing::instrument(skip_all)]
async fn checkout(
    State(shop): State<Shop>,
    ShopperPost { visit, user, form }: ShopperPost<Checkout>,
) -> Result<Response, ShopError> {
    let key = if form.key.is_empty() {
        chassis::id::new_id()
    } else {
        form.key.clone()
    };
    let address = ShippingAddress {
        name: form.name.clone(),
        line1: form.line1.clone(),
        line2: Some(form.line2.clone()).filter(|l| !l.is_empty()),
        city: form.city.clone(),
        postal_code: form.postal_code.clone(),
        country: form.country.clone(),
    };
    match shop
        .orders
        .checkout(
            user.user_id.clone(),
            key,
            address,
            form.payment_token.clone(),
        )
        .await
    {
        Ok(order) => Ok(Redirect::to(&format!("/orders/{}", order.id)).into_response()),
        Err(OrderError::Invalid(errors)) => {
            // A new key: the corrected form is another request.
            let form = Checkout {
                key: chassis::id::new_id(),
                ..form
            };
            checkout_page(
                &shop,
                &visit,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                &form,
                &Errors::from(errors),
            )
            .await
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct Paging {
    cursor: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn orders(
    State(shop): State<Shop>,
    ShopperPage { visit, user }: ShopperPage,
    Query(paging): Query<Paging>,
) -> Result<Response, ShopError> {
    let listed = shop
        .orders
        .orders(user.user_id, paging.cursor.filter(|c| !c.is_empty()))
        .await?;
    Ok(page(&visit, StatusCode::OK, pages::orders(&visit, &listed)))
}

#[tracing::instrument(skip_all)]
async fn order(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    ShopperPage { visit, user }: ShopperPage,
) -> Result<Response, ShopError> {
    let order = shop.orders.order(user.user_id.clone(), id.clone()).await?;
    let timeline = shop.orders.timeline(user.user_id.clone(), id).await?;
    let names = products(
        &shop,
        order.items.iter().map(|i| i.product_id.clone()).collect(),
    )
    .await?;
    Ok(page(
        &visit,
        StatusCode::OK,
        pages::order(&visit, &order, &timeline, &names),
    ))
}

#[tracing::instrument(skip_all)]
async fn cancel(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    ShopperPost { user, .. }: ShopperPost<Plain>,
) -> Result<Response, ShopError> {
    let order = shop.orders.cancel(user.user_id, id).await?;
    Ok(Redirect::to(&format!("/orders/{}", order.id)).into_response())
}

async fn not_found() -> ShopError {
    ShopError::NotFound
}

/// A compiled-in asset, cached for an hour (it changes only with a release).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("shop.css"))
}

async fn order_script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("order.js"))
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn sign_in_goes_back_only_to_this_site() {
        assert_eq!(local("/orders/1?x=y"), "/orders/1?x=y");
        for foreign in [
            "",
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "/a\r\nSet-Cookie: x=y",
            "/caf\u{e9}",
        ] {
            assert_eq!(local(foreign), "/", "{foreign:?}");
        }
    }
}
