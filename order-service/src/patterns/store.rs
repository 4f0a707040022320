//! The part of placing an order that every database-first pattern shares:
//! claim the idempotency key, insert the order and (in the outbox) its event,
//! in one statement, or find the order the key placed before.

use anyhow::Context as _;
use chrono::{SubsecRound as _, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PlaceError, Placement};
use crate::db;
use crate::db::orders::{Inserted, KeyClaim, OutboxRow};
use crate::domain::Order;

/// Whether [`insert`] stored a new order or found the key's earlier one.
pub(crate) enum Stored {
    New(Order),
    Replayed(Order),
}

/// The order `placement` will be stored as: a new id, and the time now in
/// microseconds, as PostgreSQL keeps it, so that what is answered and
/// published reads back exactly.
pub(crate) fn new_order(placement: &Placement) -> Order {
    Order::new(
        Uuid::now_v7(),
        &placement.order,
        Utc::now().trunc_subsecs(6),
    )
}

/// Inserts `order` (with its key, its outbox row when given, and the trace
/// context for the CDC reader when given) in one statement on `conn`; in
/// autocommit that is the whole transaction. A key
/// used before answers with its earlier order, or [`PlaceError::KeyReused`]
/// when that order's request differed.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    placement: &Placement,
    order: Order,
    outbox: Option<OutboxRow<'_>>,
    wal_traceparent: Option<&str>,
) -> Result<Stored, PlaceError> {
    let fingerprint = placement
        .key
        .as_ref()
        .map(|_| placement.order.fingerprint());
    let claim = placement
        .key
        .as_ref()
        .zip(fingerprint.as_deref())
        .map(|(key, request_hash)| KeyClaim { key, request_hash });
    match db::orders::insert(conn, &order, claim, outbox, wal_traceparent)
        .await
        .context("inserting the order")?
    {
        Inserted::New => Ok(Stored::New(order)),
        Inserted::KeyTaken => {
            let (key, fingerprint) = placement
                .key
                .as_ref()
                .zip(fingerprint)
                .context("a key was taken, so there was one")?;
            let (order_id, request_hash) =
                db::idempotency::find(conn, placement.order.customer_id(), key)
                    .await
                    .context("reading a replayed key")?
                    .context("a taken idempotency key is missing")?;
            if request_hash != fingerprint {
                return Err(PlaceError::KeyReused);
            }
            let order = db::orders::find(conn, order_id)
                .await
                .context("loading the order of a replayed key")?
                .context("an idempotency key points at a missing order")?;
            Ok(Stored::Replayed(order))
        }
    }
}

/// The order committed on its own (one statement in autocommit), for the
/// patterns whose transaction holds nothing else but, for the CDC reader,
/// `wal_traceparent`.
#[cfg(any(feature = "cdc", feature = "dual-write"))]
pub(crate) async fn commit(
    pool: &sqlx::PgPool,
    placement: Placement,
    wal_traceparent: Option<&str>,
) -> Result<Stored, PlaceError> {
    let mut conn = pool
        .acquire()
        .await
        .context("acquiring a database connection")?;
    let order = new_order(&placement);
    let stored = insert(&mut conn, &placement, order, None, wal_traceparent).await?;
    if matches!(stored, Stored::New(_)) {
        service_kit::crash::crash_point("after_commit_before_publish");
    }
    Ok(stored)
}
