//! The shop's pages in the public OpenAPI document: they are public routes like the
//! API's, so the gateway's route templates (metrics, traces) and the declaration
//! checks cover them too. They answer HTML; forms post
//! `application/x-www-form-urlencoded` with a `csrf` field and answer 303.

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder,
};
use utoipa::openapi::{
    ContentBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required, ResponseBuilder,
};

/// A page (GET) or a form's target (POST) at a path with `parameter`, if any.
fn operation(summary: &str, post: bool, parameter: Option<&str>) -> Operation {
    let mut operation = OperationBuilder::new()
        .tag("storefront")
        .summary(Some(summary));
    operation = if post {
        operation.response(
            "303",
            ResponseBuilder::new()
                .description("Done: on to the next page (or the form again with its errors)")
                .build(),
        )
    } else {
        operation.response(
            "200",
            ResponseBuilder::new()
                .description("An HTML page")
                .content("text/html", ContentBuilder::new().build())
                .build(),
        )
    };
    if let Some(name) = parameter {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .build(),
        );
    }
    operation.build()
}

fn get(summary: &str, parameter: Option<&str>) -> PathItem {
    PathItem::new(HttpMethod::Get, operation(summary, false, parameter))
}

fn post(summary: &str, parameter: Option<&str>) -> PathItem {
    PathItem::new(HttpMethod::Post, operation(summary, true, parameter))
}

fn form(page: &str, target: &str) -> PathItem {
    PathItemBuilder::new()
        .operation(HttpMethod::Get, operation(page, false, None))
        .operation(HttpMethod::Post, operation(target, true, None))
        .build()
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
                        None,
                    ),
                )
                .path("/products/{id}", get("A product's page", id))
                .path(
                    "/account/signup",
                    form("The sign-up form", "Create an account and sign in"),
                )
                .path(
                    "/account/signin",
                    form("The sign-in form", "Sign in (sets the session cookie)"),
                )
                .path("/account/signout", post("Sign out", None))
                .path("/cart", get("The shopper's cart", None))
                .path("/cart/items", post("Add a product to the cart", None))
                .path(
                    "/cart/items/{product_id}",
                    post("Set a cart line's quantity (0 removes it)", product),
                )
                .path(
                    "/cart/items/{product_id}/remove",
                    post("Remove a cart line", product),
                )
                .path(
                    "/checkout",
                    form("The checkout form", "Place the order of the cart"),
                )
                .path("/orders", get("The shopper's orders", None))
                .path(
                    "/orders/{id}",
                    get("An order, refreshing itself until it settles", id),
                )
                .path("/orders/{id}/cancel", post("Cancel a confirmed order", id))
                .path(crate::http::STYLESHEET, get("The shop's stylesheet", None)),
        )
        .build()
}
