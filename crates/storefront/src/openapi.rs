//! The shop's pages in the public OpenAPI document: they are public routes like the
//! API's, so the gateway's route templates (metrics, traces) and the declaration
//! checks cover them too. They answer HTML; forms post
//! `application/x-www-form-urlencoded` with a `csrf` field matching the `__Host-bazaar_csrf`
//! cookie, and answer 303 to the next page.

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required, ResponseBuilder,
};

/// What each status of a shop route means.
fn meaning(status: &str) -> &'static str {
    match status {
        "200" => "The page",
        "303" => "Done, or sign in first: on to the page in `Location`",
        "400" => "A form or query that cannot be read (a page explains)",
        "401" => "Wrong email or password: the form again",
        "403" => "The form's `csrf` field does not match the `__Host-bazaar_csrf` cookie",
        "404" => "No such product or order (or not the shopper's): the shop's 404 page",
        "409" => "Not possible in the order's state",
        "422" => "The form again, each error next to its field",
        "429" => "Too many sign-in attempts",
        _ => "A service the shop needs is unavailable: a page says so",
    }
}

/// An operation answering `statuses` (HTML pages), at a path with `parameter`, taking
/// `form` (field name, integer?) when it is a form's target.
fn operation(
    summary: &str,
    statuses: &[&str],
    parameter: Option<&str>,
    form: Option<&[(&str, bool)]>,
) -> Operation {
    let mut operation = OperationBuilder::new()
        .tag("storefront")
        .summary(Some(summary));
    for status in statuses {
        let mut response = ResponseBuilder::new().description(meaning(status));
        if *status != "303" {
            response = response.content("text/html", ContentBuilder::new().build());
        }
        operation = operation.response(*status, response.build());
    }
    if let Some(name) = parameter {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        );
    }
    if let Some(fields) = form {
        let mut schema = ObjectBuilder::new()
            .property("csrf", ObjectBuilder::new().schema_type(Type::String))
            .required("csrf");
        for (name, integer) in fields {
            let field = if *integer {
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(100))
            } else {
                ObjectBuilder::new().schema_type(Type::String)
            };
            schema = schema.property(*name, field);
        }
        operation = operation.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/x-www-form-urlencoded",
                    ContentBuilder::new().schema(Some(schema.build())).build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    operation.build()
}

const SIGN_UP: &[(&str, bool)] = &[("name", false), ("email", false), ("password", false)];
const SIGN_IN: &[(&str, bool)] = &[("email", false), ("password", false)];
const ADD: &[(&str, bool)] = &[("product_id", false), ("quantity", true)];
const QUANTITY: &[(&str, bool)] = &[("quantity", true)];
const CHECKOUT: &[(&str, bool)] = &[
    ("key", false),
    ("name", false),
    ("line1", false),
    ("line2", false),
    ("city", false),
    ("postal_code", false),
    ("country", false),
    ("payment_token", false),
];

/// A page behind sign-in.
const SIGNED_IN: &[&str] = &["200", "303", "503"];
/// A form's target.
const POSTED: &[&str] = &["303", "400", "403", "503"];

fn get(summary: &str, statuses: &[&str], parameter: Option<&str>) -> PathItem {
    PathItem::new(
        HttpMethod::Get,
        operation(summary, statuses, parameter, None),
    )
}

fn post(
    summary: &str,
    statuses: &[&str],
    parameter: Option<&str>,
    form: &[(&str, bool)],
) -> PathItem {
    PathItem::new(
        HttpMethod::Post,
        operation(summary, statuses, parameter, Some(form)),
    )
}

/// A form's page (GET) and target (POST) at one path.
fn form(page: (&str, &[&str]), target: (&str, &[&str]), fields: &[(&str, bool)]) -> PathItem {
    PathItemBuilder::new()
        .operation(HttpMethod::Get, operation(page.0, page.1, None, None))
        .operation(
            HttpMethod::Post,
            operation(target.0, target.1, None, Some(fields)),
        )
        .build()
}

/// The stylesheet, the one answer that is not HTML.
/// A compiled-in asset (`what`, of `content_type`).
fn asset(what: &str, content_type: &str) -> PathItem {
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .tag("storefront")
            .summary(Some(format!("The shop's {what}, compiled in")))
            .response(
                "200",
                ResponseBuilder::new()
                    .description(format!("The {what}"))
                    .content(content_type, ContentBuilder::new().build())
                    .build(),
            )
            .build(),
    )
}

/// The storefront's OpenAPI document.
pub(crate) fn document() -> OpenApi {
    let id = Some("id");
    let product = Some("product_id");
    OpenApiBuilder::new()
        .paths(
            PathsBuilder::new()
                .path(
                    "/",
                    get(
                        "The shop's home page: products, searched by `q`, paged by `cursor`",
                        &["200", "400", "503"],
                        None,
                    ),
                )
                .path(
                    "/products/{id}",
                    get("A product's page", &["200", "404", "503"], id),
                )
                .path(
                    "/account/signup",
                    form(
                        ("The sign-up form", &["200"]),
                        (
                            "Create an account and sign in (sets the session cookie)",
                            &["303", "400", "403", "422", "429", "503"],
                        ),
                        SIGN_UP,
                    ),
                )
                .path(
                    "/account/signin",
                    form(
                        ("The sign-in form", &["200"]),
                        (
                            "Sign in (sets the session cookie)",
                            &["303", "400", "401", "403", "429", "503"],
                        ),
                        SIGN_IN,
                    ),
                )
                .path(
                    "/account/signout",
                    post("Sign out", &["303", "400", "403"], None, &[]),
                )
                .path("/cart", get("The shopper's cart", SIGNED_IN, None))
                .path(
                    "/cart/items",
                    post("Add a product to the cart", POSTED, None, ADD),
                )
                .path(
                    "/cart/items/{product_id}",
                    post(
                        "Set a cart line's quantity (0 removes it)",
                        POSTED,
                        product,
                        QUANTITY,
                    ),
                )
                .path(
                    "/cart/items/{product_id}/remove",
                    post("Remove a cart line", POSTED, product, &[]),
                )
                .path(
                    "/checkout",
                    form(
                        ("The checkout form", SIGNED_IN),
                        (
                            "Place the order of the cart",
                            &["303", "400", "403", "409", "422", "503"],
                        ),
                        CHECKOUT,
                    ),
                )
                .path(
                    "/orders",
                    get(
                        "The shopper's orders, newest first, paged by `cursor`",
                        &["200", "303", "400", "503"],
                        None,
                    ),
                )
                .path(
                    "/orders/{id}",
                    get(
                        "An order, following it live until it settles",
                        &["200", "303", "404", "503"],
                        id,
                    ),
                )
                .path(
                    "/orders/{id}/cancel",
                    post(
                        "Cancel a confirmed order",
                        &["303", "400", "403", "404", "409", "503"],
                        id,
                        &[],
                    ),
                )
                .path(crate::http::STYLESHEET, asset("stylesheet", "text/css"))
                .path(
                    crate::http::ORDER_SCRIPT,
                    asset("order page's script", "text/javascript"),
                ),
        )
        .build()
}
