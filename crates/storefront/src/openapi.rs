//! The shop's pages in the public OpenAPI document: they are public routes like the
//! API's, so the gateway's route templates (metrics, traces) and the declaration
//! checks cover them too. They answer HTML.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Required, ResponseBuilder,
};

/// An HTML page answering GET.
fn page(summary: &str, path_parameter: Option<&str>) -> PathItem {
    let mut operation = OperationBuilder::new()
        .tag("storefront")
        .summary(Some(summary))
        .response(
            "200",
            ResponseBuilder::new()
                .description("An HTML page")
                .content("text/html", ContentBuilder::new().build())
                .build(),
        );
    if let Some(name) = path_parameter {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .build(),
        );
    }
    PathItem::new(HttpMethod::Get, operation.build())
}

/// The storefront's OpenAPI document.
pub(crate) fn document() -> OpenApi {
    OpenApiBuilder::new()
        .paths(
            PathsBuilder::new()
                .path(
                    "/",
                    page(
                        "The shop's home page: products, searched by `q`, paged by `cursor`",
                        None,
                    ),
                )
                .path("/products/{id}", page("A product's page", Some("id")))
                .path(crate::http::STYLESHEET, page("The shop's stylesheet", None)),
        )
        .build()
}
