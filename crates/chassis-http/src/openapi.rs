//! OpenAPI pieces every module's document shares: the bearer scheme and the problem
//! responses any route can give. They are added here, once, instead of on every path.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, RefOr, Response, ResponseBuilder};

use crate::problem::PROBLEM_JSON;

pub const BEARER: &str = "bearer";

/// Adds the bearer scheme and the generic problem responses to every operation.
#[derive(Debug, Clone, Copy)]
pub struct CommonResponses;

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                )))),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| problem(description));
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let is_api = op
                    .tags
                    .as_ref()
                    .is_none_or(|t| !t.iter().any(|t| t == "ops"));
                if is_api {
                    add(
                        op,
                        "400",
                        "Malformed request (bad JSON, wrong type, bad parameter)",
                    );
                    add(op, "429", "Rate limit exceeded; see Retry-After");
                }
                if op.request_body.is_some() {
                    add(op, "413", "Body larger than 1 MiB");
                    add(op, "415", "Body is not JSON");
                    add(op, "422", "Invalid values; `errors` names each field");
                }
                add(op, "504", "The request exceeded its time budget");
                let scopes: Vec<String> = op
                    .security
                    .iter()
                    .flatten()
                    .filter_map(|req| serde_json::to_value(req).ok())
                    .filter_map(|v| v.get(BEARER).cloned())
                    .filter_map(|v| serde_json::from_value::<Vec<String>>(v).ok())
                    .flatten()
                    .collect();
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    add(op, "401", "Missing, invalid or expired bearer token");
                }
                if scopes.iter().any(|s| s == "admin") {
                    add(op, "403", "The caller is not an admin");
                }
            }
        }
    }
}

/// The ops routes every bazaar server has, and the shared schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(crate::health::live, crate::health::ready, crate::red::render),
    components(schemas(crate::problem::Problem, chassis_core::validation::FieldError)),
    tags(
        (name = "identity", description = "Accounts and sign-in"),
        (name = "catalog", description = "Products, prices and stock"),
        (name = "cart", description = "The signed-in user's cart"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct OpsApiDoc;
