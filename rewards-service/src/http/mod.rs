//! Routes of rewards-service. Every value from the client is checked before
//! it reaches SQL: what the API cannot parse or PostgreSQL cannot store (a
//! NUL byte) is a 400.
//!
//! The public listener serves `GET /customers/{id}/rewards` and the OpenAPI
//! document (see [`openapi`]); the operator endpoints (`/metrics`,
//! `GET /ledger`) go with it, or, when `ADMIN_LISTEN_ADDR` is set, to the
//! admin listener only. Health and readiness are on both.

mod error;
pub mod openapi;
#[cfg(test)]
mod tests;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use service_kit::http::{ErrorBody, path_rejection, query_rejection};
use service_kit::limits::Limits;
use service_kit::openapi::responses::{DatabaseUnavailable, Internal};
use service_kit::ops::{Ops, Routes};
use service_kit::serve::Routers;
use service_kit::startup::Core;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use error::ApiError;

use crate::db::{self, Credited, LedgerEntry};

/// Most ledger entries one response shows.
const LEDGER_LIMIT: i64 = 1000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Longest customer id looked up, in characters.
const MAX_CUSTOMER_ID: usize = 1024;
/// Longest a scrape waits for the database's gauges.
const GAUGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    /// Database, NATS, stream names and metrics.
    pub core: Core,
}

/// The public router and, with `separate_admin`, the admin router.
pub fn routers(state: AppState, limits: &Limits, separate_admin: bool) -> Routers {
    let routes = Routes {
        api: Router::new().route("/customers/{id}/rewards", get(rewards)),
        operator: Router::new().route("/ledger", get(ledger)),
        max_body: 16 * 1024,
        operations: openapi::operations(),
    };
    service_kit::ops::routers(state, limits, routes, separate_admin)
}

impl Ops for AppState {
    fn core(&self) -> &Core {
        &self.core
    }

    /// The API reads the ledger only; the consumer catches up on its own.
    fn serves_without_broker(&self) -> bool {
        true
    }

    /// The cancellations waiting for their credit, and the broker's backlog.
    async fn refresh_gauges(&self) {
        let awaiting = tokio::time::timeout(GAUGE_TIMEOUT, async {
            let mut conn = self.core.pool.acquire().await?;
            db::awaiting_credit(&mut conn).await
        })
        .await;
        match awaiting {
            Ok(Ok(awaiting)) => service_kit::meters::reversals_awaiting_credit(awaiting),
            Ok(Err(error)) => tracing::debug!(%error, "reading the cancellations awaiting credit"),
            Err(_) => tracing::debug!("reading the cancellations awaiting credit timed out"),
        }
        self.core.refresh_broker_gauges().await;
    }
}

/// A customer's points and the entries that make them.
#[derive(Debug, Serialize, ToSchema)]
struct Rewards {
    customer_id: String,
    /// Points: the sum of the ledger's, all of it, its reversals taken off.
    balance: i64,
    /// Newest first, at most 1000 entries: a credit per order, and a
    /// reversal (negative points) per cancelled order.
    ledger: Vec<LedgerEntry>,
}

/// `GET /customers/{id}/rewards`: the balance and the ledger's entries
/// (credits and reversals); 404 until the customer's first order was
/// credited.
#[utoipa::path(
    get,
    path = "/customers/{id}/rewards",
    tag = "rewards",
    operation_id = "get_rewards",
    summary = "A customer's rewards",
    description = "The balance and the ledger's entries, newest first: a credit for each order, of \
        one point per whole unit of the order's currency, rounded down, and a reversal taking them \
        back (negative points) for each cancelled order. The balance is net of the reversals. 404 \
        until the customer's first order was credited.",
    params(("id" = String, Path, min_length = 1, max_length = 1024, pattern = "^[^\\u0000]*$",
        description = "The customer's id, as order-service took it.")),
    responses(
        (status = 200, description = "The customer's rewards.", body = Rewards),
        (status = 400, description = "- `invalid_customer_id`: `id` is over 1024 characters or holds a NUL.\n\
            - `invalid_path`: `id` is not UTF-8.",
            body = ErrorBody),
        (status = 404, description = "- `customer_not_found`: no order of this customer was credited yet.",
            body = ErrorBody),
        Internal,
        DatabaseUnavailable,
    ),
)]
async fn rewards(
    State(state): State<AppState>,
    customer_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(customer_id) = match customer_id {
        Ok(customer_id) => customer_id,
        Err(rejection) => return Ok(path_rejection(&rejection)),
    };
    // Customer ids arrive in events from any producer, so only what
    // PostgreSQL cannot hold, or would not be worth a lookup, is refused.
    if customer_id.is_empty()
        || customer_id.chars().count() > MAX_CUSTOMER_ID
        || customer_id.contains('\0')
    {
        return Err(ApiError::InvalidCustomerId(MAX_CUSTOMER_ID));
    }
    let mut conn = state.core.pool.acquire().await?;
    let balance = db::balance(&mut conn, &customer_id)
        .await?
        .ok_or(ApiError::CustomerNotFound)?;
    let ledger = db::ledger(&mut conn, &customer_id, LEDGER_LIMIT).await?;
    Ok(Json(Rewards {
        customer_id,
        balance,
        ledger,
    })
    .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LedgerParams {
    /// Order id of the last entry of the previous page.
    after: Option<Uuid>,
    /// Orders per page: 1 to 1000, 100 if not given. Each order's entries
    /// (its credit, and its reversal if it was cancelled) come in one page.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A page of the ledger, in order-id order.
#[derive(Debug, Serialize, ToSchema)]
struct LedgerPage {
    /// The entries of up to `limit` orders: an order's credit, then its
    /// reversal if it was cancelled.
    entries: Vec<Credited>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

/// `GET /ledger?after=&limit=`: every entry (credits and reversals), in
/// order-id order, paginated by order — what a consistency audit compares
/// with order-service's orders.
#[utoipa::path(
    get,
    path = "/ledger",
    tag = "operator",
    operation_id = "list_ledger",
    summary = "The whole ledger",
    description = "Every entry, credits and reversals, in order-id order, a page of orders at a \
        time (pass `next_after` as `after`); an order's entries are never split across pages. What \
        a consistency audit compares with order-service's orders.",
    params(LedgerParams),
    responses(
        (status = 200, description = "A page of the ledger.", body = LedgerPage),
        (status = 400, description = "- `invalid_query`: a parameter of the wrong type, or an unknown one.\n\
            - `invalid_limit`: `limit` is not 1 to 1000.",
            body = ErrorBody),
        Internal,
        DatabaseUnavailable,
    ),
)]
async fn ledger(
    State(state): State<AppState>,
    params: Result<Query<LedgerParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return Ok(query_rejection(&rejection)),
    };
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidLimit(MAX_PAGE));
    }
    let mut conn = state.core.pool.acquire().await?;
    let entries = db::ledger_page(&mut conn, params.after, i64::from(limit)).await?;
    let mut orders: Vec<Uuid> = entries.iter().map(|e| e.order_id).collect();
    orders.dedup();
    let next_after = (orders.len() == limit as usize)
        .then(|| orders.last().copied())
        .flatten();
    Ok(Json(LedgerPage {
        entries,
        next_after,
    })
    .into_response())
}
