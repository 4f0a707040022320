//! The part of placing an order that every database-first pattern shares:
//! insert the order and (in the outbox) its event in one statement, fenced
//! by the active mode, or find the order the key placed before.

use anyhow::Context as _;
use chrono::{SubsecRound as _, Utc};
use sqlx::PgConnection;

use super::{PlaceError, Placement};
use crate::db;
use crate::db::orders::{Inserted, OutboxRow};
use crate::domain::{NewOrder, Order};

/// Whether [`insert`] stored a new order or found the key's earlier one.
pub(crate) enum Stored {
    New(Order),
    Replayed(Order),
}

/// The order `placement` will be stored as: the key's id, and the time now
/// in microseconds, as PostgreSQL keeps it, so that what is answered and
/// published reads back exactly.
pub(crate) fn new_order(placement: &Placement) -> Order {
    Order::new(
        placement.order_id(),
        &placement.order,
        Utc::now().trunc_subsecs(6),
    )
}

/// Inserts `order` (with its outbox row when given, and the trace context
/// for the CDC reader when given) in one statement on `conn`, if `mode` is
/// the active one; in autocommit that is the whole transaction. A key used
/// before answers with its earlier order, or [`PlaceError::KeyReused`] when
/// that order has other content.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    mode: &'static str,
    placement: &Placement,
    order: Order,
    outbox: Option<OutboxRow<'_>>,
    wal_traceparent: Option<&str>,
) -> Result<Stored, PlaceError> {
    let inserted = db::orders::insert(conn, mode, &order, &placement.key, outbox, wal_traceparent)
        .await
        .context("inserting the order")?;
    match inserted {
        Inserted::New => Ok(Stored::New(order)),
        Inserted::KeyTaken => {
            let earlier = earlier_order(conn, placement)
                .await?
                .context("a taken idempotency key has no order")?;
            replay(earlier, &placement.order).map(Stored::Replayed)
        }
        Inserted::Fenced => {
            let active = db::mode::active_on(conn)
                .await
                .context("reading the active mode")?
                .unwrap_or_default();
            tracing::error!(
                ours = mode,
                active,
                "order-service was switched to another mode: this instance stores no more \
                 orders and must be stopped"
            );
            Err(PlaceError::ModeSwitched { ours: mode, active })
        }
    }
}

/// The order the placement's key placed before, if any, by the rule every
/// mode follows ([`db::idempotency`]).
pub(crate) async fn earlier_order(
    conn: &mut PgConnection,
    placement: &Placement,
) -> anyhow::Result<Option<Order>> {
    let Some(id) = db::idempotency::order_of(conn, placement.order.customer_id(), &placement.key)
        .await
        .context("looking up the idempotency key")?
    else {
        return Ok(None);
    };
    let order = db::orders::find(conn, id)
        .await
        .context("loading the order of a replayed key")?
        .context("an idempotency key points at a missing order")?;
    Ok(Some(order))
}

/// The answer to a retry whose key placed `earlier`: the same order, or
/// [`PlaceError::KeyReused`] when the request had other content.
pub(crate) fn replay(earlier: Order, new: &NewOrder) -> Result<Order, PlaceError> {
    if earlier.has_content_of(new) {
        Ok(earlier)
    } else {
        Err(PlaceError::KeyReused)
    }
}

/// The order committed on its own (one statement in autocommit), for the
/// patterns whose transaction holds nothing else but, for the CDC reader,
/// `wal_traceparent`.
#[cfg(any(feature = "cdc", feature = "dual-write"))]
pub(crate) async fn commit(
    pool: &sqlx::PgPool,
    mode: &'static str,
    placement: Placement,
    wal_traceparent: Option<&str>,
) -> Result<Stored, PlaceError> {
    let mut conn = pool
        .acquire()
        .await
        .context("acquiring a database connection")?;
    let order = new_order(&placement);
    let stored = insert(&mut conn, mode, &placement, order, None, wal_traceparent).await?;
    if matches!(stored, Stored::New(_)) {
        service_kit::crash::crash_point("after_commit_before_publish");
    }
    Ok(stored)
}
