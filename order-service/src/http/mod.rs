//! Routes. Handlers turn input into domain types first, then call the pattern.

mod error;
mod health;
mod orders;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use service_kit::http::{method_not_allowed, not_found, observe};
use service_kit::telemetry::PrometheusHandle;
use shared_events::Names;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::patterns::Pattern;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pattern: Arc<Pattern>,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub names: Names,
    pub metrics: PrometheusHandle,
    /// Orders above this total (minor units) are refused.
    pub max_order_total_minor: i64,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", get(orders::list).post(orders::place))
        .route("/orders/{id}", get(orders::get))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
