use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::db_unavailable;
use service_kit::http::{ErrorDetail, error_response, internal_error, unavailable};
use service_kit::limits::RETRY_AFTER_SECS;
use utoipa::ToSchema;

use crate::domain::{IdempotencyKey, ValidationError};
use crate::patterns::PlaceError;

/// Every way an order-service request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(
        "Idempotency-Key must be 1 to {} visible ASCII characters",
        IdempotencyKey::MAX_LEN
    )]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("{0:?} is not an order id")]
    InvalidOrderId(String),
    /// A query value that breaks the rule of its domain type (a 400, where
    /// the same value in a body is a 422).
    #[error(transparent)]
    InvalidQueryValue(ValidationError),
    #[error("customer_id is required")]
    CustomerIdRequired,
    #[error("limit must be between 1 and {0}")]
    InvalidLimit(u32),
    #[error("no order with this id")]
    OrderNotFound,
    #[error("the event broker is unavailable and nothing was stored; retry later")]
    Unavailable,
    #[error(
        "the order may or may not have been placed (its write or its publish did not answer \
         in time): retry with the same body and Idempotency-Key {0:?} to learn the outcome"
    )]
    OutcomeUnknown(IdempotencyKey),
    /// This instance runs a mode order-service was switched away from.
    #[error(
        "this order-service instance runs a mode that order-service was switched away from; \
         nothing was stored: retry (another instance serves the current mode)"
    )]
    ModeSwitched,
    /// No database connection could be had: nothing was read or written.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable,
    /// A wait cut short because the process is stopping.
    #[error("the service is shutting down; retry, the order may still come")]
    ShuttingDown,
    #[error("wait must be a duration of at most {0} seconds, like 500ms or 2s")]
    InvalidWait(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The body of a 504 from `POST /orders`: the error and, with
/// `outcome_unknown`, the key to retry with (a `timeout` has none).
#[derive(Serialize, ToSchema)]
pub struct OutcomeUnknownBody<'a> {
    error: ErrorDetail<'a>,
    /// The `Idempotency-Key` to retry with: the client's, or one made for a
    /// request that came without one.
    #[schema(required = false)]
    idempotency_key: &'a str,
}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::KeyReused => ApiError::IdempotencyKeyReused,
            PlaceError::Unavailable => ApiError::Unavailable,
            PlaceError::Unknown { key } => ApiError::OutcomeUnknown(key),
            PlaceError::ModeSwitched { .. } => ApiError::ModeSwitched,
            // Only "never connected" is a 503 for a write: a connection lost
            // mid-way may have carried the COMMIT.
            PlaceError::Internal(error)
                if db_unavailable::sqlx_cause(&error)
                    .is_some_and(db_unavailable::never_connected) =>
            {
                ApiError::DatabaseUnavailable
            }
            PlaceError::Internal(error) => ApiError::Internal(error),
        }
    }
}

/// For the read paths, which use `?` on SQL directly: a read that failed
/// for want of the database changed nothing, so it is a 503.
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
            ApiError::Validation(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code()),
            ApiError::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::InvalidOrderId(_) => (StatusCode::BAD_REQUEST, "invalid_order_id"),
            ApiError::InvalidQueryValue(e) => (StatusCode::BAD_REQUEST, e.code()),
            ApiError::CustomerIdRequired => (StatusCode::BAD_REQUEST, "customer_id_required"),
            ApiError::InvalidLimit(_) => (StatusCode::BAD_REQUEST, "invalid_limit"),
            ApiError::OrderNotFound => (StatusCode::NOT_FOUND, "order_not_found"),
            ApiError::InvalidWait(_) => (StatusCode::BAD_REQUEST, "invalid_wait"),
            ApiError::Unavailable => {
                return unavailable("broker_unavailable", &self.to_string(), RETRY_AFTER_SECS);
            }
            ApiError::ModeSwitched => {
                return unavailable("mode_switched", &self.to_string(), RETRY_AFTER_SECS);
            }
            ApiError::ShuttingDown => {
                return unavailable("shutting_down", &self.to_string(), RETRY_AFTER_SECS);
            }
            ApiError::DatabaseUnavailable => {
                return unavailable("database_unavailable", &self.to_string(), RETRY_AFTER_SECS);
            }
            ApiError::OutcomeUnknown(key) => {
                // The key also travels as a field of its own, for clients
                // that sent none and must retry with this one.
                let message = self.to_string();
                let body = OutcomeUnknownBody {
                    error: ErrorDetail {
                        code: "outcome_unknown",
                        message: &message,
                    },
                    idempotency_key: key.as_str(),
                };
                let mut response = (
                    StatusCode::GATEWAY_TIMEOUT,
                    [(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))],
                    Json(body),
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(key.as_str()) {
                    response.headers_mut().insert("idempotency-key", value);
                }
                return response;
            }
            ApiError::Internal(error) => return internal_error(error),
        };
        error_response(status, code, &self.to_string())
    }
}
