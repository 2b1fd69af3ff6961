//! The serving side: a contract's handlers as internal routes.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chassis_core::rpc::{Handler, Served};

use crate::auth::{self, Access};
use crate::problem::Problem;

/// Where internal routes live; the gateway never forwards this prefix.
pub const PREFIX: &str = "/internal/v1";

/// `POST /internal/v1/<service>/<method>` for each handler (guard them with
/// [`internal`]).
pub fn router(handlers: Vec<Handler>) -> Router {
    handlers.into_iter().fold(Router::new(), |router, handler| {
        let path = format!("{PREFIX}/{}/{}", handler.service, handler.method);
        let handle = handler.handle;
        router.route(
            &path,
            post(move |body: Bytes| {
                let work = handle(&body);
                async move { respond(work.await) }
            }),
        )
    })
}

fn respond(served: Served) -> Response {
    match served {
        Served::Answer(answer) => (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            answer.body,
        )
            .into_response(),
        // A malformed call is the caller's bug: 400.
        Served::Malformed(detail) => Problem::bad_request(detail).into_response(),
        Served::Unencodable(e) => Problem::internal(&e).into_response(),
    }
}

/// Guards the internal routes of one module's contract (`access.provider`): a valid
/// service credential for that module or 401, from one of `access.callers` or 403.
/// (`route_layer`, so an unknown internal path is still a plain 404.) Counted per
/// method served ([`track_rpc`](crate::red::track_rpc)), refused calls included.
pub fn internal(routes: Router, access: Access) -> Router {
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            access,
            auth::require_service,
        ))
        .route_layer(axum::middleware::from_fn(crate::red::track_rpc))
}
