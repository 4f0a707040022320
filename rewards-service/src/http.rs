//! Routes of rewards-service.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use service_kit::http::{
    Readiness, error_response, internal_error, method_not_allowed, not_found, observe,
};
use service_kit::telemetry::PrometheusHandle;
use shared_events::Names;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

use crate::db::{self, LedgerEntry};

/// Most ledger entries one response shows.
const LEDGER_LIMIT: i64 = 1000;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub names: Names,
    pub metrics: PrometheusHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/customers/{id}/rewards", get(rewards))
        .route("/healthz", get(service_kit::http::live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Rewards {
    customer_id: String,
    balance: i64,
    /// Newest first, at most 1000 entries.
    ledger: Vec<LedgerEntry>,
}

/// `GET /customers/{id}/rewards`: the balance and the credited orders; 404
/// until the customer's first order was credited.
async fn rewards(State(state): State<AppState>, Path(customer_id): Path<String>) -> Response {
    let lookup = async {
        let mut conn = state.pool.acquire().await?;
        let Some(balance) = db::balance(&mut conn, &customer_id).await? else {
            return Ok::<_, sqlx::Error>(None);
        };
        let ledger = db::ledger(&mut conn, &customer_id, LEDGER_LIMIT).await?;
        Ok(Some((balance, ledger)))
    };
    match lookup.await {
        Ok(Some((balance, ledger))) => Json(Rewards {
            customer_id,
            balance,
            ledger,
        })
        .into_response(),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            "customer_not_found",
            "no rewards credited to this customer yet",
        ),
        Err(error) => internal_error(&error.into()),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    service_kit::http::ready(Readiness {
        pool: &state.pool,
        nats: &state.nats,
        jetstream: &state.jetstream,
        stream: state.names.stream(),
    })
    .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    service_kit::http::metrics(&state.metrics)
}
