//! The part of placing an order that every database-first pattern shares:
//! run the pattern's [`OrderWrite`] (one statement, fenced by the active
//! mode), or find the order the key placed before.

use anyhow::Context as _;
use chrono::{SubsecRound as _, Utc};
use sqlx::PgConnection;

use super::{Outcome, PlaceError, Placed, Placement};
use crate::db;
use crate::db::orders::{Inserted, OrderWrite};
use crate::domain::{NewOrder, Order};

/// Whether [`execute`] stored the new order or found the key's earlier one.
pub(crate) enum Stored {
    New,
    Replayed(Order),
}

impl Stored {
    /// The answer: `new` (the order written), or the earlier order.
    pub(crate) fn placed(self, new: Order) -> Placed {
        match self {
            Self::New => Placed::stored(new, Outcome::New),
            Self::Replayed(earlier) => Placed::stored(earlier, Outcome::Replayed),
        }
    }
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

/// Runs `write` (the placement's order) on `conn`; in autocommit that is the
/// whole transaction. A key used before answers with its earlier order, or
/// [`PlaceError::KeyReused`] when that order has other content; a write of
/// a mode switched away from, with [`PlaceError::ModeSwitched`].
pub(crate) async fn execute(
    conn: &mut PgConnection,
    write: OrderWrite<'_>,
    placement: &Placement,
) -> Result<Stored, PlaceError> {
    let ours = write.mode();
    match write.execute(conn).await.context("inserting the order")? {
        Inserted::New => Ok(Stored::New),
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
                ours,
                active,
                "order-service was switched to another mode: this instance stores no more \
                 orders and must be stopped"
            );
            Err(PlaceError::ModeSwitched { ours, active })
        }
    }
}

/// The order the placement's key placed before, if any, by the rule every
/// mode follows ([`db::idempotency`]).
async fn earlier_order(
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
fn replay(earlier: Order, new: &NewOrder) -> Result<Order, PlaceError> {
    if earlier.has_content_of(new) {
        Ok(earlier)
    } else {
        Err(PlaceError::KeyReused)
    }
}

/// A connection of `pool` for one write in autocommit.
pub(crate) async fn connection(
    pool: &sqlx::PgPool,
) -> anyhow::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    pool.acquire()
        .await
        .context("acquiring a database connection")
}
