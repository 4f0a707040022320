//! Orders and their lines: the one statement that writes a new order
//! (fenced by the active mode, with what its pattern adds to it), and the
//! reads.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{IdempotencyKey, Order, OrderLine};

/// An event to add to the outbox with an order.
pub struct OutboxRow<'a> {
    pub event_id: Uuid,
    pub subject: &'a str,
    pub payload: &'a serde_json::Value,
    /// The trace context of the write, which the relay's publish continues.
    pub traceparent: Option<&'a str>,
}

/// What [`OrderWrite::execute`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The order, its lines and what the write carried are written.
    New,
    /// The key placed an order before (one with this id, or, for a key
    /// from before ids were derived from keys, the one the key table names;
    /// possibly in a transaction that committed while this statement
    /// waited on it): nothing was written.
    KeyTaken,
    /// Order-service was switched to another mode since this instance
    /// started: nothing was written.
    Fenced,
}

/// The write of one new order in **one statement**: one round trip, and in
/// autocommit no BEGIN or COMMIT of its own. The order and its lines, and
/// what the pattern adds to the same statement: its event as an outbox row
/// ([`OrderWrite::with_outbox_row`]), a message in the WAL
/// ([`OrderWrite::with_wal_message`]).
///
/// It writes nothing when the key placed an order before, or when the
/// active mode is not `mode` (the fence: the key-share lock it takes on
/// the mode row makes a switch wait for this write, and a write that waited
/// for a switch sees the new mode and stores nothing). A replay's earlier
/// order is then read by a statement of its own (this one's snapshot
/// predates a concurrent insert it waited for).
pub struct OrderWrite<'a> {
    mode: &'static str,
    order: &'a Order,
    key: &'a IdempotencyKey,
    outbox: Option<OutboxRow<'a>>,
    /// A transactional logical decoding message: prefix and content.
    wal_message: Option<(&'a str, &'a str)>,
}

impl<'a> OrderWrite<'a> {
    /// `order` under `key`, if `mode` is the active one.
    pub fn new(mode: &'static str, order: &'a Order, key: &'a IdempotencyKey) -> Self {
        Self {
            mode,
            order,
            key,
            outbox: None,
            wal_message: None,
        }
    }

    /// With the order's event as a row of the outbox.
    pub fn with_outbox_row(self, row: OutboxRow<'a>) -> Self {
        Self {
            outbox: Some(row),
            ..self
        }
    }

    /// With a message for a reader of the WAL beside the order's rows
    /// (transactional: streamed with them, at their commit), when there is
    /// `content`.
    pub fn with_wal_message(self, prefix: &'a str, content: Option<&'a str>) -> Self {
        Self {
            wal_message: content.map(|content| (prefix, content)),
            ..self
        }
    }

    /// The mode the write is fenced by.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    pub async fn execute(self, conn: &mut PgConnection) -> sqlx::Result<Inserted> {
        let Self {
            mode,
            order,
            key,
            outbox,
            wal_message,
        } = self;
        let lines = LineColumns::of(&order.lines);
        // `traced` modifies nothing, so it runs only because the last SELECT
        // reads it.
        let row = sqlx::query!(
            r#"WITH fence AS (
               SELECT FROM order_mode WHERE mode = $7 FOR KEY SHARE
           ), new_order AS (
               INSERT INTO orders (id, customer_id, currency, total_minor, created_at)
               SELECT $1, $2, $3, $4, $5
               WHERE EXISTS (SELECT FROM fence)
                 AND NOT EXISTS (SELECT FROM idempotency_keys WHERE customer_id = $2 AND key = $6)
               ON CONFLICT (id) DO NOTHING
               RETURNING id
           ), new_lines AS (
               INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
               SELECT new_order.id, line.*
               FROM new_order, UNNEST($8::int[], $9::text[], $10::bigint[], $11::bigint[]) AS line
           ), new_event AS (
               INSERT INTO outbox (event_id, subject, payload, traceparent)
               SELECT $12::uuid, $13::text, $14::jsonb, $15::text
               FROM new_order WHERE $12::uuid IS NOT NULL
           ), traced AS (
               SELECT pg_logical_emit_message(true, $16::text, $17::text)
               FROM new_order WHERE $17::text IS NOT NULL
           )
           SELECT EXISTS (SELECT FROM new_order) AS "inserted!",
                  EXISTS (SELECT FROM fence) AS "admitted!",
                  (SELECT count(*) FROM traced) AS "traced!""#,
            order.id,
            order.customer_id.as_str(),
            order.currency.code(),
            order.total_minor,
            order.created_at,
            key.as_str(),
            mode,
            &lines.line_nos,
            &lines.skus,
            &lines.quantities,
            &lines.prices,
            outbox.as_ref().map(|o| o.event_id),
            outbox.as_ref().map(|o| o.subject),
            outbox.as_ref().map(|o| o.payload),
            outbox.as_ref().and_then(|o| o.traceparent),
            wal_message.map(|(prefix, _)| prefix),
            wal_message.map(|(_, content)| content),
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(if row.inserted {
            Inserted::New
        } else if row.admitted {
            Inserted::KeyTaken
        } else {
            Inserted::Fenced
        })
    }
}

/// Order lines as the column arrays `UNNEST` takes.
pub(crate) struct LineColumns {
    pub line_nos: Vec<i32>,
    pub skus: Vec<String>,
    pub quantities: Vec<i64>,
    pub prices: Vec<i64>,
}

impl LineColumns {
    pub fn of(lines: &[OrderLine]) -> Self {
        Self {
            line_nos: (1..).take(lines.len()).collect(),
            skus: lines.iter().map(|l| l.sku.clone()).collect(),
            quantities: lines.iter().map(|l| l.quantity).collect(),
            prices: lines.iter().map(|l| l.unit_price_minor).collect(),
        }
    }
}

/// The order with `id`, if there is one.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Order>> {
    let Some(head) = sqlx::query_as!(
        OrderHead,
        "SELECT id, customer_id, currency, total_minor, created_at, status, cancelled_at
         FROM orders WHERE id = $1",
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(with_lines(conn, vec![head]).await?.pop())
}

/// One page of orders, oldest first, optionally of one customer, starting
/// after the order `after`.
pub async fn list(
    conn: &mut PgConnection,
    customer_id: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    let heads = sqlx::query_as!(
        OrderHead,
        r#"SELECT id, customer_id, currency, total_minor, created_at, status, cancelled_at
           FROM orders
           WHERE ($1::text IS NULL OR customer_id = $1)
             AND ($2::uuid IS NULL
                  OR (created_at, id) > (SELECT created_at, id FROM orders WHERE id = $2))
           ORDER BY created_at, id
           LIMIT $3"#,
        customer_id,
        after,
        limit
    )
    .fetch_all(&mut *conn)
    .await?;
    with_lines(conn, heads).await
}

struct OrderHead {
    id: Uuid,
    customer_id: String,
    currency: String,
    total_minor: i64,
    created_at: DateTime<Utc>,
    status: String,
    cancelled_at: Option<DateTime<Utc>>,
}

async fn with_lines(conn: &mut PgConnection, heads: Vec<OrderHead>) -> sqlx::Result<Vec<Order>> {
    let ids: Vec<Uuid> = heads.iter().map(|h| h.id).collect();
    let rows = sqlx::query!(
        r#"SELECT order_id, sku, quantity, unit_price_minor
           FROM order_lines WHERE order_id = ANY($1) ORDER BY order_id, line_no"#,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let position: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut orders: Vec<Order> = heads
        .into_iter()
        .map(|h| {
            Order::stored(
                h.id,
                &h.customer_id,
                &h.currency,
                h.total_minor,
                h.created_at,
            )
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .with_stored_status(&h.status, h.cancelled_at)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .collect::<sqlx::Result<_>>()?;
    for row in rows {
        if let Some(&i) = position.get(&row.order_id) {
            orders[i].lines.push(OrderLine {
                sku: row.sku,
                quantity: row.quantity,
                unit_price_minor: row.unit_price_minor,
            });
        }
    }
    Ok(orders)
}

#[cfg(test)]
pub(crate) mod tests {
    use sqlx::PgPool;

    use super::*;
    use crate::domain::{NewOrder, OrderStatus, PlaceOrderRequest};

    const MODE: &str = "outbox";

    fn order(customer: &str, key: &IdempotencyKey, price: i64) -> Order {
        let new = NewOrder::try_from(PlaceOrderRequest {
            customer_id: customer.to_owned(),
            currency: "EUR".to_owned(),
            lines: vec![OrderLine {
                sku: "SKU-1".to_owned(),
                quantity: 2,
                unit_price_minor: price,
            }],
        })
        .expect("a valid order");
        Order::new(key.order_id(new.customer_id()), &new, chrono::Utc::now())
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text).expect("a valid key")
    }

    /// A database whose active mode is [`MODE`].
    async fn in_mode(pool: &PgPool) -> sqlx::Result<()> {
        crate::db::mode::switch_to(pool, MODE).await.map(drop)
    }

    async fn rows(pool: &PgPool) -> sqlx::Result<[i64; 4]> {
        let mut counts = [0; 4];
        for (i, table) in ["orders", "order_lines", "idempotency_keys", "outbox"]
            .iter()
            .enumerate()
        {
            counts[i] = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(pool)
                .await?;
        }
        Ok(counts)
    }

    /// The plain write of `order` under `key`, in `mode`.
    async fn insert(
        conn: &mut PgConnection,
        mode: &'static str,
        order: &Order,
        key: &IdempotencyKey,
    ) -> sqlx::Result<Inserted> {
        OrderWrite::new(mode, order, key).execute(conn).await
    }

    /// Waits until `n` sessions of this database wait on a lock.
    pub(crate) async fn sessions_waiting(pool: &PgPool, n: i64) {
        harness::eventually(
            &format!("{n} session(s) to wait on a lock"),
            std::time::Duration::from_secs(10),
            || async {
                let waiting: Option<i64> = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                )
                .fetch_one(pool)
                .await
                .ok();
                (waiting == Some(n)).then_some(())
            },
        )
        .await;
    }

    #[sqlx::test]
    async fn one_statement_writes_the_order_its_lines_and_outbox_row(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let k1 = key("k1");
        let placed = order("ivy", &k1, 500);
        let payload = serde_json::json!({ "order": placed.id });
        let inserted = OrderWrite::new(MODE, &placed, &k1)
            .with_outbox_row(OutboxRow {
                event_id: Uuid::now_v7(),
                subject: "orders.placed",
                payload: &payload,
                traceparent: None,
            })
            .execute(&mut *pool.acquire().await?)
            .await?;
        assert_eq!(inserted, Inserted::New);
        assert_eq!(rows(&pool).await?, [1, 1, 0, 1]);
        let stored = find(&mut *pool.acquire().await?, placed.id).await?;
        assert_eq!(stored.map(|o| o.total_minor), Some(1000));
        Ok(())
    }

    #[sqlx::test]
    async fn every_read_shows_whether_an_order_was_cancelled(pool: PgPool) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let mut conn = pool.acquire().await?;
        let (k1, k2) = (key("k1"), key("k2"));
        let (kept, cancelled) = (order("ivy", &k1, 500), order("ivy", &k2, 700));
        for (placed, key) in [(&kept, &k1), (&cancelled, &k2)] {
            assert_eq!(insert(&mut conn, MODE, placed, key).await?, Inserted::New);
        }
        let at: DateTime<Utc> = "2026-12-10T09:30:00.123456Z".parse().unwrap();
        sqlx::query(
            "UPDATE orders SET status = 'cancelled', cancelled_at = $2, cancel_reason = 'late' WHERE id = $1",
        )
        .bind(cancelled.id)
        .bind(at)
        .execute(&mut *conn)
        .await?;

        let found = find(&mut conn, cancelled.id).await?.expect("the order");
        assert_eq!(
            (found.status, found.cancelled_at),
            (OrderStatus::Cancelled, Some(at))
        );
        let listed = list(&mut conn, Some("ivy"), None, 10).await?;
        let replayed = crate::db::replay::created_since(&mut conn, None, None, 10).await?;
        for orders in [&listed, &replayed] {
            let statuses: HashMap<Uuid, _> = orders
                .iter()
                .map(|o| (o.id, (o.status, o.cancelled_at)))
                .collect();
            assert_eq!(statuses[&kept.id], (OrderStatus::Placed, None));
            assert_eq!(statuses[&cancelled.id], (OrderStatus::Cancelled, Some(at)));
        }
        // `cdc resync` republishes a cancelled order's placement as it was.
        let republished = replayed
            .iter()
            .find(|o| o.id == cancelled.id)
            .expect("the cancelled order")
            .placed_event();
        let mut placement = cancelled.placed_event();
        placement.placed_at = republished.placed_at;
        assert_eq!(republished, placement);
        Ok(())
    }

    #[sqlx::test]
    async fn a_used_key_writes_nothing_and_names_its_first_order(pool: PgPool) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let k1 = key("k1");
        let (first, second) = (order("ivy", &k1, 500), order("ivy", &k1, 700));
        let mut conn = pool.acquire().await?;
        for (placed, expected) in [(&first, Inserted::New), (&second, Inserted::KeyTaken)] {
            assert_eq!(insert(&mut conn, MODE, placed, &k1).await?, expected);
        }
        assert_eq!(rows(&pool).await?, [1, 1, 0, 0]);
        let taken = crate::db::idempotency::order_of(&mut conn, &first.customer_id, &k1).await?;
        assert_eq!(taken, Some(first.id));
        Ok(())
    }

    #[sqlx::test]
    async fn the_same_key_belongs_to_each_customer_separately(pool: PgPool) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let k1 = key("k1");
        let mut conn = pool.acquire().await?;
        for customer in ["ivy", "jon"] {
            let inserted = insert(&mut conn, MODE, &order(customer, &k1, 500), &k1).await?;
            assert_eq!(inserted, Inserted::New, "{customer}");
        }
        assert_eq!(rows(&pool).await?, [2, 2, 0, 0]);
        Ok(())
    }

    /// A key claimed before order ids were derived from keys names an
    /// order with another id: it is taken all the same, and stands for
    /// that order.
    #[sqlx::test]
    async fn a_key_from_before_derived_ids_stands_for_its_order(pool: PgPool) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let k1 = key("k1");
        let mut earlier = order("ivy", &k1, 500);
        earlier.id = Uuid::now_v7();
        let mut conn = pool.acquire().await?;
        assert_eq!(
            insert(&mut conn, MODE, &earlier, &key("other")).await?,
            Inserted::New
        );
        sqlx::query(
            "INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id) VALUES ('ivy', 'k1', '', $1)",
        )
        .bind(earlier.id)
        .execute(&mut *conn)
        .await?;
        let retry = order("ivy", &k1, 500);
        assert_eq!(
            insert(&mut conn, MODE, &retry, &k1).await?,
            Inserted::KeyTaken
        );
        assert_eq!(rows(&pool).await?, [1, 1, 1, 0]);
        let taken = crate::db::idempotency::order_of(&mut conn, &retry.customer_id, &k1).await?;
        assert_eq!(taken, Some(earlier.id));
        Ok(())
    }

    /// The statement's snapshot is taken before it waits on a concurrent
    /// insert under its key: it writes nothing, and the earlier order is
    /// found by a statement of its own once the other transaction committed.
    #[sqlx::test]
    async fn a_key_racing_an_uncommitted_order_waits_and_writes_nothing(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let k1 = key("k1");
        let (first, second) = (order("ivy", &k1, 500), order("ivy", &k1, 500));
        let mut tx = pool.begin().await?;
        assert_eq!(insert(&mut tx, MODE, &first, &k1).await?, Inserted::New);
        let mut other = pool.acquire().await?;
        {
            let racing = insert(&mut other, MODE, &second, &k1);
            tokio::pin!(racing);
            tokio::select! {
                finished = &mut racing => panic!("the second insert did not wait: {finished:?}"),
                () = sessions_waiting(&pool, 1) => {}
            }
            tx.commit().await?;
            assert_eq!(racing.await?, Inserted::KeyTaken);
        }
        assert_eq!(rows(&pool).await?, [1, 1, 0, 0]);
        let taken = crate::db::idempotency::order_of(&mut other, &first.customer_id, &k1).await?;
        assert_eq!(taken, Some(first.id));
        Ok(())
    }

    #[sqlx::test]
    async fn a_write_of_another_mode_than_the_active_one_stores_nothing(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        crate::db::mode::switch_to(&pool, "cdc").await?;
        let k1 = key("k1");
        let inserted = insert(
            &mut *pool.acquire().await?,
            MODE,
            &order("ivy", &k1, 500),
            &k1,
        )
        .await?;
        assert_eq!(inserted, Inserted::Fenced);
        assert_eq!(rows(&pool).await?, [0, 0, 0, 0]);
        Ok(())
    }

    /// The fence holds at the instant of the switch: the switch waits for a
    /// write in flight (which it then drains), and a write that waited for
    /// the switch sees the new mode and stores nothing.
    #[sqlx::test]
    async fn a_switch_and_a_write_of_the_old_mode_never_overlap(pool: PgPool) -> sqlx::Result<()> {
        in_mode(&pool).await?;
        let mut write = pool.begin().await?;
        let k1 = key("k1");
        assert_eq!(
            insert(&mut write, MODE, &order("ivy", &k1, 500), &k1).await?,
            Inserted::New
        );
        {
            let switch = crate::db::mode::switch_to(&pool, "cdc");
            tokio::pin!(switch);
            tokio::select! {
                finished = &mut switch => panic!("the switch did not wait for the write: {finished:?}"),
                () = sessions_waiting(&pool, 1) => {}
            }
            write.commit().await?;
            assert_eq!(switch.await?.as_deref(), Some(MODE));
        }

        let mut switch = pool.begin().await?;
        sqlx::query("UPDATE order_mode SET mode = 'self-read'")
            .execute(&mut *switch)
            .await?;
        let k2 = key("k2");
        let late = order("ivy", &k2, 500);
        let mut conn = pool.acquire().await?;
        {
            let write = insert(&mut conn, "cdc", &late, &k2);
            tokio::pin!(write);
            tokio::select! {
                finished = &mut write => panic!("the write did not wait for the switch: {finished:?}"),
                () = sessions_waiting(&pool, 1) => {}
            }
            switch.commit().await?;
            assert_eq!(write.await?, Inserted::Fenced);
        }
        assert_eq!(rows(&pool).await?, [1, 1, 0, 0]);
        Ok(())
    }
}
