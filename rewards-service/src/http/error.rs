//! Every way a rewards-service request can fail, as the client sees it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::db_unavailable;
use service_kit::http::{error_response, internal_error, unavailable};
use service_kit::limits::RETRY_AFTER_SECS;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("customer_id must be 1 to {0} characters without NUL")]
    InvalidCustomerId(usize),
    #[error("limit must be between 1 and {0}")]
    InvalidLimit(u32),
    #[error("no rewards credited to this customer yet")]
    CustomerNotFound,
    /// Every request here only reads: one that failed for want of the
    /// database changed nothing, so it is a 503.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if db_unavailable::unavailable_for_read(&error) {
            ApiError::DatabaseUnavailable
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::InvalidCustomerId(_) => (StatusCode::BAD_REQUEST, "invalid_customer_id"),
            ApiError::InvalidLimit(_) => (StatusCode::BAD_REQUEST, "invalid_limit"),
            ApiError::CustomerNotFound => (StatusCode::NOT_FOUND, "customer_not_found"),
            ApiError::DatabaseUnavailable => {
                return unavailable("database_unavailable", &self.to_string(), RETRY_AFTER_SECS);
            }
            ApiError::Internal(error) => return internal_error(error),
        };
        error_response(status, code, &self.to_string())
    }
}
