//! Self-read's SQL: the projector's per-order locks and inbox, its writes of
//! an order's events to the history, and the announcements of projected
//! orders. The projector notifies [`CHANNEL`] in its batch transaction, so
//! PostgreSQL delivers the ids only if and when the orders are committed;
//! `?wait` readers listen for them ([`super::announcements`]).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::orders::LineColumns;
use crate::domain::{Cancellation, Order};

/// Takes the transaction-scoped lock of each order of `ids`, waiting for a
/// transaction that holds one: two transactions that write one order's
/// events then apply them one after the other, never at once.
///
/// Each order's lock is an advisory lock on a 64-bit key folded from its id
/// (two orders that share a key only wait for each other). The keys are
/// taken in ascending order, deduplicated, in one statement whose `ORDER BY`
/// PostgreSQL evaluates before the locking function, so that two batches
/// that share orders wait for each other instead of deadlocking.
/// Statements after this one take their snapshots after the locks: they see
/// whatever the transaction that held a lock committed.
pub async fn lock_orders(
    conn: &mut PgConnection,
    ids: impl IntoIterator<Item = Uuid>,
) -> sqlx::Result<()> {
    let mut keys: Vec<i64> = ids.into_iter().map(lock_key).collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "locked!"
           FROM (SELECT pg_advisory_xact_lock(key) FROM unnest($1::bigint[]) AS key ORDER BY key) AS locks"#,
        &keys
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The advisory lock key of order `id`: its two halves folded together.
fn lock_key(id: Uuid) -> i64 {
    let (high, low) = id.as_u64_pair();
    (high ^ low).cast_signed()
}

/// Inserts `order` (placed, from its `OrderPlaced`) unless an order with its
/// id exists, in one statement; returns whether it was inserted. A
/// cancellation that waited for the order is applied with it, and no longer
/// waits: the order is inserted cancelled, or, if it was there already
/// (written before a switch into self-read), cancelled unless it was.
pub async fn insert_order(conn: &mut PgConnection, order: &Order) -> sqlx::Result<bool> {
    let lines = LineColumns::of(&order.lines);
    let row = sqlx::query!(
        r#"WITH awaiting AS (
               DELETE FROM cancellations_awaiting_order WHERE order_id = $1
               RETURNING cancelled_at, reason
           ), new_order AS (
               INSERT INTO orders (id, customer_id, currency, total_minor, created_at,
                                   status, cancelled_at, cancel_reason)
               SELECT $1, $2, $3, $4, $5,
                      CASE WHEN awaiting.cancelled_at IS NULL THEN 'placed' ELSE 'cancelled' END,
                      awaiting.cancelled_at, awaiting.reason
               FROM (VALUES (true)) AS one LEFT JOIN awaiting ON true
               ON CONFLICT (id) DO NOTHING
               RETURNING id
           ), new_lines AS (
               INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
               SELECT new_order.id, line.*
               FROM new_order, UNNEST($6::int[], $7::text[], $8::bigint[], $9::bigint[]) AS line
           ), cancelled_before AS (
               UPDATE orders
               SET status = 'cancelled', cancelled_at = awaiting.cancelled_at,
                   cancel_reason = awaiting.reason
               FROM awaiting
               WHERE orders.id = $1 AND orders.status = 'placed'
           )
           SELECT EXISTS (SELECT FROM new_order) AS "inserted!""#,
        order.id,
        order.customer_id.as_str(),
        order.currency.code(),
        order.total_minor,
        order.created_at,
        &lines.line_nos,
        &lines.skus,
        &lines.quantities,
        &lines.prices,
    )
    .fetch_one(conn)
    .await?;
    Ok(row.inserted)
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The order was placed, and is cancelled now.
    Now,
    /// The order is not in the history yet: the cancellation waits for it.
    Awaiting,
    /// The order was cancelled before, or a cancellation waits for it
    /// already: nothing changed.
    Before,
}

/// Cancels order `order_id` if it is placed; if the history does not have
/// it yet, records `cancellation` (brought by `event_id`) to be applied when
/// its `OrderPlaced` comes. An order is cancelled once: a second
/// cancellation, under any event id, changes nothing.
pub async fn cancel(
    conn: &mut PgConnection,
    order_id: Uuid,
    event_id: Uuid,
    cancellation: &Cancellation,
) -> sqlx::Result<Cancelled> {
    let row = sqlx::query!(
        r#"WITH cancelled AS (
               UPDATE orders SET status = 'cancelled', cancelled_at = $3, cancel_reason = $4
               WHERE id = $1 AND status = 'placed'
               RETURNING id
           ), awaiting AS (
               INSERT INTO cancellations_awaiting_order (order_id, event_id, cancelled_at, reason)
               SELECT $1, $2, $3, $4
               WHERE NOT EXISTS (SELECT FROM orders WHERE id = $1)
               ON CONFLICT (order_id) DO NOTHING
               RETURNING order_id
           )
           SELECT EXISTS (SELECT FROM cancelled) AS "cancelled!",
                  EXISTS (SELECT FROM awaiting) AS "awaiting!""#,
        order_id,
        event_id,
        cancellation.cancelled_at,
        cancellation.reason.as_deref(),
    )
    .fetch_one(conn)
    .await?;
    Ok(match (row.cancelled, row.awaiting) {
        (true, _) => Cancelled::Now,
        (false, true) => Cancelled::Awaiting,
        (false, false) => Cancelled::Before,
    })
}

/// Records that `event_id` was applied, in the applying transaction; false
/// if it had been before.
pub async fn record(conn: &mut PgConnection, event_id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query!(
        "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING",
        event_id
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The LISTEN/NOTIFY channel; per database, as NOTIFY is.
pub const CHANNEL: &str = "orders_projected";

/// Ids per notification: a payload must stay under 8000 bytes, and an id
/// takes 37 (36 and a comma).
const IDS_PER_NOTIFICATION: i64 = 200;

/// Notifies `ids` as comma-separated lists, delivered at COMMIT.
pub async fn announce(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "SELECT pg_notify($1, string_agg(id::text, ',' ORDER BY n))
         FROM unnest($2::uuid[]) WITH ORDINALITY AS ids (id, n)
         GROUP BY (n - 1) / $3",
        CHANNEL,
        ids,
        IDS_PER_NOTIFICATION,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The ids of one notification's payload; anything else in it is skipped.
pub fn parse(payload: &str) -> Vec<Uuid> {
    payload
        .split(',')
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}
