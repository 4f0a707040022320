use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::duration;
use service_kit::http::{JsonBody, path_rejection, query_rejection};
use tokio::time::Instant;
use uuid::Uuid;

use super::announcements::Next;
use super::{ApiError, AppState};
use crate::db;
use crate::domain::{CustomerId, IdempotencyKey, NewOrder, Order, PlaceOrderRequest};
use crate::patterns::{Durability, Outcome, Placement};

/// Longest `?wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// `POST /orders`: 201 with the order and its `Location` (202 in self-read
/// mode, where the order is accepted and the history follows). With an
/// `Idempotency-Key`, a retry of the same body returns the same order
/// (and `Idempotent-Replayed: true`); a different body under the key is 422.
pub async fn place(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(IdempotencyKey::parse)
                .ok_or(ApiError::InvalidIdempotencyKey)?,
        ),
    };
    let order = NewOrder::try_from(request)?.within_total(state.max_order_total_minor)?;
    let placed = state.pattern.place(Placement { order, key }).await?;
    if placed.outcome == Outcome::New {
        metrics::counter!("orders_placed_total").increment(1);
    }
    let location = format!("/orders/{}", placed.order.id);
    let status = match placed.durability {
        Durability::Stored => StatusCode::CREATED,
        Durability::Accepted => StatusCode::ACCEPTED,
    };
    let mut response = (status, [(header::LOCATION, location)], Json(placed.order)).into_response();
    if placed.outcome == Outcome::Replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Wait up to this long (e.g. `2s`) for an order that is not there yet:
    /// in self-read mode, read your own write.
    wait: Option<String>,
}

/// `GET /orders/{id}[?wait=2s]`. A wait looks at the database when it
/// starts, when the order is announced, and at its deadline (see
/// [`super::announcements`]); it never outlasts the request timeout, and
/// when the process stops it answers at once (503 `shutting_down` if the
/// order is not there: it may still come, ask another instance).
pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return Ok(path_rejection(&rejection)),
    };
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return Ok(query_rejection(&rejection)),
    };
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::InvalidOrderId(id))?;
    let wait = match params.wait {
        None => Duration::ZERO,
        Some(text) => duration::parse(&text)
            .ok()
            .filter(|wait| *wait <= MAX_WAIT)
            .ok_or(ApiError::InvalidWait(MAX_WAIT.as_secs()))?,
    };
    let mut waiter = state
        .announcements
        .waiter(id, Instant::now() + wait.min(state.max_wait));
    let mut last_look = false;
    loop {
        metrics::counter!("order_lookups_total").increment(1);
        let mut conn = state.core.pool.acquire().await?;
        if let Some(order) = db::orders::find(&mut conn, id).await? {
            return Ok(Json(order).into_response());
        }
        drop(conn);
        if last_look {
            return Err(ApiError::ShuttingDown);
        }
        match waiter.next().await {
            Next::Look => {}
            Next::GiveUp => return Err(ApiError::OrderNotFound),
            Next::LookLastTime => last_look = true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    customer_id: Option<String>,
    /// Id of the last order of the previous page.
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct OrderPage {
    orders: Vec<Order>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Uuid>,
}

/// Who may list which orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Any listing, unfiltered included (the audit's view).
    All,
    /// One customer's orders only: `customer_id` is required. The public
    /// listener's scope when operator endpoints have a listener of their own.
    Customer,
}

/// `GET /orders?customer_id=&after=&limit=` where unfiltered listing is allowed.
pub async fn list_all(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(Scope::All, state, params).await
}

/// `GET /orders?customer_id=&after=&limit=` where `customer_id` is required.
pub async fn list_customer(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    list(Scope::Customer, state, params).await
}

/// Orders oldest first, keyset-paginated.
async fn list(
    scope: Scope,
    state: AppState,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return Ok(query_rejection(&rejection)),
    };
    let customer_id = params
        .customer_id
        .map(|raw| CustomerId::parse(raw).map_err(ApiError::InvalidQueryValue))
        .transpose()?;
    if scope == Scope::Customer && customer_id.is_none() {
        return Err(ApiError::CustomerIdRequired);
    }
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidLimit(MAX_PAGE));
    }
    let mut conn = state.core.pool.acquire().await?;
    let orders = db::orders::list(
        &mut conn,
        customer_id.as_ref().map(CustomerId::as_str),
        params.after,
        i64::from(limit),
    )
    .await?;
    let next_after = (orders.len() == limit as usize)
        .then(|| orders.last().map(|o| o.id))
        .flatten();
    Ok(Json(OrderPage { orders, next_after }).into_response())
}
