use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{IdempotencyKey, Order, OrderLine};

/// An idempotency key to claim with an order.
pub struct KeyClaim<'a> {
    pub key: &'a IdempotencyKey,
    /// The request's fingerprint, stored with the key.
    pub request_hash: &'a [u8],
}

/// An event to add to the outbox with an order.
pub struct OutboxRow<'a> {
    pub event_id: Uuid,
    pub subject: &'a str,
    pub payload: &'a serde_json::Value,
    /// The trace context of the write, which the relay's publish continues.
    pub traceparent: Option<&'a str>,
}

/// The prefix of the transactional logical decoding message that carries
/// an order's trace context to the CDC reader (`cdc` mode), beside the
/// order's rows in the same transaction.
pub const TRACE_MESSAGE_PREFIX: &str = "order_events.traceparent";

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The order, its lines, its key and its outbox row are written.
    New,
    /// The customer's key was claimed before (possibly by a transaction that
    /// committed while this statement waited on it): nothing was written.
    KeyTaken,
}

/// Writes `order` with its lines, and with `claim` and `outbox` when given,
/// and `wal_traceparent` as a [`TRACE_MESSAGE_PREFIX`] message in the WAL,
/// in **one statement**: one round trip, and in autocommit no BEGIN or
/// COMMIT of its own. The order is written only if the key was claimed, so
/// a replay writes nothing; its earlier order is then read by a statement
/// of its own (this one's snapshot predates a concurrent claim it waited
/// for).
pub async fn insert(
    conn: &mut PgConnection,
    order: &Order,
    claim: Option<KeyClaim<'_>>,
    outbox: Option<OutboxRow<'_>>,
    wal_traceparent: Option<&str>,
) -> sqlx::Result<Inserted> {
    let lines = LineColumns::of(&order.lines);
    // `traced` modifies nothing, so it runs only because the last SELECT
    // reads it.
    let inserted = sqlx::query!(
        r#"WITH claim AS (
               INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id)
               SELECT $2::text, $6::text, $7::bytea, $1::uuid WHERE $6::text IS NOT NULL
               ON CONFLICT (customer_id, key) DO NOTHING
               RETURNING order_id
           ), new_order AS (
               INSERT INTO orders (id, customer_id, currency, total_minor, created_at)
               SELECT $1, $2, $3, $4, $5
               WHERE $6::text IS NULL OR EXISTS (SELECT FROM claim)
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
                  (SELECT count(*) FROM traced) AS "traced!""#,
        order.id,
        order.customer_id.as_str(),
        order.currency.code(),
        order.total_minor,
        order.created_at,
        claim.as_ref().map(|c| c.key.as_str()),
        claim.as_ref().map(|c| c.request_hash),
        &lines.line_nos,
        &lines.skus,
        &lines.quantities,
        &lines.prices,
        outbox.as_ref().map(|o| o.event_id),
        outbox.as_ref().map(|o| o.subject),
        outbox.as_ref().map(|o| o.payload),
        outbox.as_ref().and_then(|o| o.traceparent),
        TRACE_MESSAGE_PREFIX,
        wal_traceparent,
    )
    .fetch_one(&mut *conn)
    .await?
    .inserted;
    Ok(if inserted {
        Inserted::New
    } else {
        Inserted::KeyTaken
    })
}

/// Order lines as the column arrays `UNNEST` takes.
struct LineColumns {
    line_nos: Vec<i32>,
    skus: Vec<String>,
    quantities: Vec<i64>,
    prices: Vec<i64>,
}

impl LineColumns {
    fn of(lines: &[OrderLine]) -> Self {
        Self {
            line_nos: (1..).take(lines.len()).collect(),
            skus: lines.iter().map(|l| l.sku.clone()).collect(),
            quantities: lines.iter().map(|l| l.quantity).collect(),
            prices: lines.iter().map(|l| l.unit_price_minor).collect(),
        }
    }
}

/// Inserts `order` as it is, unless an order with its id exists; returns
/// whether it was inserted.
pub async fn insert_if_absent(conn: &mut PgConnection, order: &Order) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"INSERT INTO orders (id, customer_id, currency, total_minor, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id) DO NOTHING"#,
        order.id,
        order.customer_id.as_str(),
        order.currency.code(),
        order.total_minor,
        order.created_at,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    insert_lines(conn, order.id, &order.lines).await?;
    Ok(true)
}

async fn insert_lines(conn: &mut PgConnection, id: Uuid, lines: &[OrderLine]) -> sqlx::Result<()> {
    let lines = LineColumns::of(lines);
    sqlx::query!(
        r#"INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
           SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])"#,
        id,
        &lines.line_nos,
        &lines.skus,
        &lines.quantities,
        &lines.prices,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The order with `id`, if there is one.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Order>> {
    let Some(head) = sqlx::query_as!(
        OrderHead,
        "SELECT id, customer_id, currency, total_minor, created_at FROM orders WHERE id = $1",
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
        r#"SELECT id, customer_id, currency, total_minor, created_at
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
mod tests {
    use sqlx::PgPool;

    use super::*;
    use crate::domain::{NewOrder, PlaceOrderRequest};

    fn order(customer: &str, price: i64) -> Order {
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
        Order::new(Uuid::now_v7(), &new, chrono::Utc::now())
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text).expect("a valid key")
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

    #[sqlx::test]
    async fn one_statement_writes_the_order_its_lines_key_and_outbox_row(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let placed = order("ivy", 500);
        let k1 = key("k1");
        let payload = serde_json::json!({ "order": placed.id });
        let inserted = insert(
            &mut *pool.acquire().await?,
            &placed,
            Some(KeyClaim {
                key: &k1,
                request_hash: b"hash",
            }),
            Some(OutboxRow {
                event_id: Uuid::now_v7(),
                subject: "orders.placed",
                payload: &payload,
                traceparent: None,
            }),
            None,
        )
        .await?;
        assert_eq!(inserted, Inserted::New);
        assert_eq!(rows(&pool).await?, [1, 1, 1, 1]);
        let stored = find(&mut *pool.acquire().await?, placed.id).await?;
        assert_eq!(stored.map(|o| o.total_minor), Some(1000));
        Ok(())
    }

    #[sqlx::test]
    async fn a_used_key_writes_nothing_and_names_its_first_order(pool: PgPool) -> sqlx::Result<()> {
        let (first, second) = (order("ivy", 500), order("ivy", 700));
        let k1 = key("k1");
        let mut conn = pool.acquire().await?;
        for (placed, hash, expected) in [
            (&first, b"first", Inserted::New),
            (&second, b"other", Inserted::KeyTaken),
        ] {
            let claim = KeyClaim {
                key: &k1,
                request_hash: hash,
            };
            assert_eq!(
                insert(&mut conn, placed, Some(claim), None, None).await?,
                expected
            );
        }
        assert_eq!(rows(&pool).await?, [1, 1, 1, 0]);
        let taken = crate::db::idempotency::find(&mut conn, &first.customer_id, &k1).await?;
        assert_eq!(taken, Some((first.id, b"first".to_vec())));
        Ok(())
    }

    #[sqlx::test]
    async fn the_same_key_belongs_to_each_customer_separately(pool: PgPool) -> sqlx::Result<()> {
        let k1 = key("k1");
        let mut conn = pool.acquire().await?;
        for customer in ["ivy", "jon"] {
            let claim = KeyClaim {
                key: &k1,
                request_hash: b"hash",
            };
            let inserted =
                insert(&mut conn, &order(customer, 500), Some(claim), None, None).await?;
            assert_eq!(inserted, Inserted::New, "{customer}");
        }
        assert_eq!(rows(&pool).await?, [2, 2, 2, 0]);
        Ok(())
    }

    /// The statement's snapshot is taken before it waits on a concurrent
    /// claim of its key: it writes nothing, and the earlier order is found
    /// by a statement of its own once the other transaction committed.
    #[sqlx::test]
    async fn a_claim_racing_an_uncommitted_one_waits_and_writes_nothing(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let k1 = key("k1");
        let (first, second) = (order("ivy", 500), order("ivy", 500));
        let claim = || KeyClaim {
            key: &k1,
            request_hash: b"hash",
        };
        let mut tx = pool.begin().await?;
        assert_eq!(
            insert(&mut tx, &first, Some(claim()), None, None).await?,
            Inserted::New
        );
        let mut other = pool.acquire().await?;
        {
            let racing = insert(&mut other, &second, Some(claim()), None, None);
            tokio::pin!(racing);
            // It waits on the first transaction's lock, and goes no further.
            let waiting = e2e_tests::eventually(
                "the second claim to wait on the first",
                std::time::Duration::from_secs(10),
                || async {
                    let waiting: Option<i64> = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
                    )
                    .fetch_one(&pool)
                    .await
                    .ok();
                    (waiting == Some(1)).then_some(())
                },
            );
            tokio::select! {
                finished = &mut racing => panic!("the second claim did not wait: {finished:?}"),
                () = waiting => {}
            }
            tx.commit().await?;
            assert_eq!(racing.await?, Inserted::KeyTaken);
        }
        assert_eq!(rows(&pool).await?, [1, 1, 1, 0]);
        let taken = crate::db::idempotency::find(&mut other, &first.customer_id, &k1).await?;
        assert_eq!(taken.map(|(id, _)| id), Some(first.id));
        Ok(())
    }
}
