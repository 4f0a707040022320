use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::http::{ErrorBody, JsonBody, path_rejection, query_rejection};
use service_kit::openapi::responses::{DatabaseUnavailable, Internal};
use tokio::time::Instant;
use tracing::Instrument as _;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::OutcomeUnknownBody;
use super::wait::{Next, Waiter};
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
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    operation_id = "place_order",
    summary = "Place an order",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]+$",
            description = "Makes the request safe to retry: a retry with the same body returns \
                the same order (`Idempotent-Replayed: true`) and places nothing new, in every \
                mode and across a switch of mode. Keys are scoped per customer. 1 to 255 \
                visible ASCII characters. Without one, the service makes one up, and names it \
                when the outcome is unknown (504)."),
    ),
    request_body(content = PlaceOrderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The order is stored (modes `outbox`, `cdc`, `dual-write`).",
            body = Order, headers(
                ("Location" = String, description = "The order's path, `/orders/{id}`."),
                ("Idempotent-Replayed" = String,
                    description = "`true` when an earlier request under this `Idempotency-Key` placed the order."),
            )),
        (status = 202, description = "The order is accepted by the broker (mode `self-read`); \
                it can be read within milliseconds (`GET /orders/{id}?wait=2s` waits for it).",
            body = Order, headers(
                ("Location" = String, description = "The order's path, `/orders/{id}`."),
                ("Idempotent-Replayed" = String,
                    description = "`true` when an earlier request under this `Idempotency-Key` placed the order."),
            )),
        (status = 400, description = "Nothing was stored.\n\
            - `malformed_json`: the body is not JSON.\n\
            - `invalid_idempotency_key`: `Idempotency-Key` is empty, over 255 characters or not visible ASCII.\n\
            - `bad_request`: the body could not be read.",
            body = ErrorBody),
        (status = 413, description = "- `body_too_large`: the body is over 64 KiB.", body = ErrorBody),
        (status = 415, description = "- `unsupported_media_type`: the `Content-Type` is not JSON.", body = ErrorBody),
        (status = 422, description = "The body is JSON but not an order this service takes; nothing was stored.\n\
            - `invalid_body`: wrong types, unknown or missing fields.\n\
            - `invalid_customer_id`, `unknown_currency`, `no_lines`, `too_many_lines`, `invalid_sku`, \
              `invalid_quantity`, `negative_price`, `price_too_large`: a field breaks its rule.\n\
            - `total_too_large`: the total (the sum of the lines' `quantity` × `unit_price_minor`) is \
              above `MAX_ORDER_TOTAL_MINOR`, 1,000,000,000 minor units unless the operator set another.\n\
            - `idempotency_key_reused`: this customer used the `Idempotency-Key` with another body.",
            body = ErrorBody),
        (status = 500, description = "- `internal`: anything else, a database connection lost during \
            the write included: the outcome is unknown; retry with the same `Idempotency-Key`.",
            body = ErrorBody),
        (status = 503, description = "Nothing was stored; retry after `Retry-After`.\n\
            - `database_unavailable`: no database connection could be had within `DB_ACQUIRE_TIMEOUT`.\n\
            - `broker_unavailable`: (self-read) the broker connection is down and the request had no \
              `Idempotency-Key`.\n\
            - `mode_switched`: this instance runs a mode that order-service was switched away from \
              since it started; another instance serves the current mode.",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 504, description = "The outcome is unknown: retry with the same body and `Idempotency-Key`.\n\
            - `outcome_unknown`: the order's write (or, in self-read, its publish) did not answer \
              in time; the key to retry with, the client's or one made for it, is in \
              `Idempotency-Key` and `idempotency_key`.",
            body = OutcomeUnknownBody, headers(
                ("Retry-After" = u32, description = "Seconds to wait before retrying."),
                ("Idempotency-Key" = String,
                    description = "With `outcome_unknown`: the key to retry with (the client's, or one made for it)."),
            )),
    ),
)]
pub async fn place(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let client_key = match headers.get("idempotency-key") {
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
    // Every order is placed under a key, so that an answer that cannot
    // say what happened can always name the key that will find out.
    let placement = Placement {
        order,
        client_key: client_key.is_some(),
        key: client_key.unwrap_or_else(IdempotencyKey::generate),
    };
    let key = placement.key.clone();
    // The span whose trace context the event carries on.
    let placing = state
        .write
        .place(placement)
        .instrument(tracing::info_span!("place order"));
    let placed = tokio::time::timeout(state.place_timeout, placing)
        .await
        .map_err(|_| {
            tracing::warn!(
                timeout = ?state.place_timeout,
                "placing an order took too long; its outcome is unknown"
            );
            ApiError::OutcomeUnknown(key)
        })??;
    if placed.outcome == Outcome::New {
        service_kit::meters::order_placed();
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Wait up to this long for an order that is not there yet: in
    /// self-read mode, read your own write. Whole seconds (`2s`, or `2`) or
    /// milliseconds (`250ms`), at most 10 s.
    #[param(example = "2s", pattern = r"^((0?[0-9]|10)s?|(10000|0?[0-9]{1,4})ms)$")]
    wait: Option<String>,
}

/// A `?wait=`: exactly the forms its pattern in the document admits, so that
/// the document says which values are taken and which are refused.
fn parse_wait(text: &str) -> Option<Duration> {
    let whole = |digits: &str, most: usize| {
        (!digits.is_empty() && digits.len() <= most && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    let wait = match text.strip_suffix("ms") {
        Some(millis) => Duration::from_millis(whole(millis, 5)?),
        None => Duration::from_secs(whole(text.strip_suffix('s').unwrap_or(text), 2)?),
    };
    (wait <= MAX_WAIT).then_some(wait)
}

/// `GET /orders/{id}[?wait=2s]`. A wait looks at the database when it
/// starts, when the order is announced, and at its deadline (see
/// [`super::wait`]); it never outlasts the request timeout, and
/// when the process stops it answers at once (503 `shutting_down` if the
/// order is not there: it may still come, ask another instance).
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    operation_id = "get_order",
    summary = "Read an order",
    params(("id" = Uuid, Path, description = "The order's id."), GetParams),
    responses(
        (status = 200, description = "The order.", body = Order),
        (status = 400, description = "- `invalid_order_id`: `id` is not a UUID.\n\
            - `invalid_path`: `id` is not UTF-8.\n\
            - `invalid_query`: an unknown query parameter.\n\
            - `invalid_wait`: `wait` is not whole seconds or milliseconds of at most 10 s.",
            body = ErrorBody),
        (status = 404, description = "- `order_not_found`: no such order (by the end of `wait`, if given).",
            body = ErrorBody),
        Internal,
        (status = 503, description = "Retry after `Retry-After`.\n\
            - `database_unavailable`: the database could not be read.\n\
            - `shutting_down`: a `wait` cut short because the service is stopping; \
              the order may still come (another instance will have it).",
            body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    ),
)]
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
        Some(text) => parse_wait(&text).ok_or(ApiError::InvalidWait(MAX_WAIT.as_secs()))?,
    };
    let deadline = Instant::now() + wait.min(state.max_wait);
    let watch = (!wait.is_zero()).then(|| state.write.watch(id)).flatten();
    let mut waiter = Waiter::new(deadline, watch, state.stopping.clone());
    let mut last_look = false;
    loop {
        service_kit::meters::order_lookup();
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this customer's orders.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    customer_id: Option<String>,
    /// Id of the last order of the previous page.
    after: Option<Uuid>,
    /// Orders per page: 1 to 500, 50 if not given.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// A page of orders, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    orders: Vec<Order>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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
///
/// Its description serves the public listener's `GET /orders` when operator
/// endpoints have a listener of their own, with `customer_id` required.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    operation_id = "list_orders",
    summary = "List orders",
    description = "Orders oldest first, a page at a time: pass `next_after` as `after` for the next page. \
        When `ADMIN_LISTEN_ADDR` is set, the public listener lists one customer's orders only.",
    params(ListParams),
    responses(
        (status = 200, description = "A page of orders.", body = OrderPage),
        (status = 400, description = "- `invalid_query`: a parameter of the wrong type, or an unknown one.\n\
            - `invalid_customer_id`: `customer_id` breaks its rule.\n\
            - `invalid_limit`: `limit` is not 1 to 500.\n\
            - `customer_id_required`: no `customer_id`, on the public listener when `ADMIN_LISTEN_ADDR` is set.",
            body = ErrorBody),
        Internal,
        DatabaseUnavailable,
    ),
)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_whole_seconds_or_milliseconds_up_to_ten_seconds() {
        let taken = [
            ("2s", 2_000),
            ("2", 2_000),
            ("05", 5_000),
            ("10s", 10_000),
            ("250ms", 250),
            ("09999ms", 9_999),
            ("10000ms", 10_000),
        ];
        for (text, millis) in taken {
            assert_eq!(
                parse_wait(text),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for text in [
            "11", "10001ms", "100000ms", "1m", "1.5s", "-1", "", "s", "ms", " 2s",
        ] {
            assert_eq!(parse_wait(text), None, "{text:?}");
        }
    }
}
