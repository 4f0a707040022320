//! Routes of rewards-service.

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service_kit::http::{
    Readiness, error_response, internal_error, method_not_allowed, not_found, observe,
    query_rejection,
};
use service_kit::telemetry::PrometheusHandle;
use shared_events::Names;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::db::{self, Credited, LedgerEntry};

/// Most ledger entries one response shows.
const LEDGER_LIMIT: i64 = 1000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

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
        .route("/ledger", get(ledger))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerParams {
    /// Order id of the last entry of the previous page.
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct LedgerPage {
    entries: Vec<Credited>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

/// `GET /ledger?after=&limit=`: every credit, in order-id order, paginated —
/// what a consistency audit compares with order-service's orders.
async fn ledger(
    State(state): State<AppState>,
    params: Result<Query<LedgerParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return query_rejection(&rejection),
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            &format!("limit must be between 1 and {MAX_PAGE}"),
        );
    }
    let page = async {
        let mut conn = state.pool.acquire().await?;
        db::ledger_page(&mut conn, params.after, i64::from(limit)).await
    };
    match page.await {
        Ok(entries) => {
            let next_after = (entries.len() == limit as usize)
                .then(|| entries.last().map(|e| e.order_id))
                .flatten();
            Json(LedgerPage {
                entries,
                next_after,
            })
            .into_response()
        }
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
