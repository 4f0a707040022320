//! The error answers: every error a client sees is
//! `{"error": {"code", "message"}}` with a stable `code`, and an internal
//! error reaches the log, never the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable, for programs to match on; each response lists its codes.
    pub code: &'a str,
    /// For people; its wording may change.
    pub message: &'a str,
}

/// The text of an internal error, carried in the response's extensions so
/// that [`observe`](super::observe) logs it inside the request's span. Never sent.
#[derive(Clone, Debug)]
pub struct InternalError(pub String);

/// A client error: `status`, a stable `code` and a human `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    (status, Json(body)).into_response()
}

/// A 500 that tells the client nothing and hands `error` to the logging middleware.
pub fn internal_error(error: &anyhow::Error) -> Response {
    let mut response = error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the request may be retried",
    );
    response
        .extensions_mut()
        .insert(InternalError(format!("{error:#}")));
    response
}

/// A 503 with `Retry-After`, for when a dependency is down.
pub fn unavailable(code: &str, message: &str, retry_after_secs: u32) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(retry_after_secs),
    );
    response
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

/// JSON 405 for known routes with the wrong method.
pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this resource",
    )
}
