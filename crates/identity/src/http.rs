//! identity's public HTTP adapter.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use chassis::auth::{ApiState, AuthUser, ClientIp};
use chassis::extract::Json;
use contracts::identity::User;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::IdentityError;
use crate::service::{IdentityService, Session};

type AppState = ApiState<IdentityService>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    #[schema(format = "email", max_length = 254, example = "ada@example.com")]
    email: String,
    #[schema(min_length = 8, max_length = 1024, example = "correct horse battery")]
    password: String,
    /// Not blank; no control or text-direction (bidi, zero-width) characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "Ada Lovelace",
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]*[^\s\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff][^\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]*$"
    )]
    name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(example = "correct horse battery")]
    password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    /// The refresh token of the last register, login or refresh answer.
    refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePasswordRequest {
    current_password: String,
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionResponse {
    /// Bearer token for `Authorization: Bearer <token>`: short-lived (`expires_in`).
    token: String,
    /// Exchanged at `POST /api/v1/auth/refresh` for a new token pair. Single use:
    /// presenting a used one again revokes the session.
    refresh_token: String,
    /// Seconds until `token` expires.
    expires_in: u64,
    user: User,
}

impl From<Session> for SessionResponse {
    fn from(s: Session) -> Self {
        Self {
            token: s.token,
            refresh_token: s.refresh_token,
            expires_in: s.expires_in,
            user: s.user,
        }
    }
}

/// Create an account and sign in.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "identity",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = SessionResponse),
        (status = 409, description = "Email already registered", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; retry after `Retry-After` seconds", body = chassis::Problem, content_type = "application/problem+json")))]
async fn register(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), IdentityError> {
    let session = state
        .service
        .register(&req.email, &req.password, &req.name, client)
        .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "identity",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = SessionResponse),
        (status = 401, description = "Wrong email or password", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins for this account or from this client; retry after `Retry-After` seconds", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; retry after `Retry-After` seconds", body = chassis::Problem, content_type = "application/problem+json")))]
async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(req): Json<LoginRequest>,
) -> Result<Json<SessionResponse>, IdentityError> {
    let session = state
        .service
        .login(&req.email, &req.password, client)
        .await?;
    Ok(Json(session.into()))
}

/// Exchange a refresh token for a new access token and refresh token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "identity",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the presented refresh token is now used", body = SessionResponse),
        (status = 401, description = "Unknown, expired, revoked or already used refresh token (a reuse revokes the session)", body = chassis::Problem, content_type = "application/problem+json")))]
async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<SessionResponse>, IdentityError> {
    Ok(Json(
        state.service.refresh(&req.refresh_token).await?.into(),
    ))
}

/// Sign out: revokes this session's refresh tokens.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "identity",
    security(("bearer" = [])),
    responses((status = 204, description = "Signed out; the access token lives out its short lifetime")))]
async fn logout(
    State(state): State<AppState>,
    AuthUser(principal): AuthUser,
) -> Result<StatusCode, IdentityError> {
    state.service.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the password; every other session of the account is revoked.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "identity",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed; other sessions revoked"),
        (status = 403, description = "The current password is wrong", body = chassis::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords; retry after `Retry-After` seconds", body = chassis::Problem, content_type = "application/problem+json")))]
async fn change_password(
    State(state): State<AppState>,
    AuthUser(principal): AuthUser,
    ClientIp(client): ClientIp,
    Json(req): Json<ChangePasswordRequest>,
) -> Result<StatusCode, IdentityError> {
    state
        .service
        .change_password(&principal, &req.current_password, &req.new_password, client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's account", body = User)))]
async fn me(
    State(state): State<AppState>,
    AuthUser(principal): AuthUser,
) -> Result<Json<User>, IdentityError> {
    Ok(Json(state.service.me(&principal).await?))
}

/// identity's public routes.
pub fn router(service: IdentityService) -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/password", put(change_password))
        .with_state(AppState {
            tokens: service.tokens().clone(),
            service,
        })
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(register, login, refresh, logout, me, change_password),
    components(schemas(
        RegisterRequest,
        LoginRequest,
        RefreshRequest,
        ChangePasswordRequest,
        SessionResponse,
        User
    ))
)]
pub struct ApiDoc;
