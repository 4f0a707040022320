use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{NewOrder, Order, OrderLine};

/// Inserts `order` under `id` with its lines, in one statement (one round
/// trip); returns it as stored.
pub async fn insert(conn: &mut PgConnection, id: Uuid, order: &NewOrder) -> sqlx::Result<Order> {
    let lines = LineColumns::of(order.lines());
    let created_at = sqlx::query_scalar!(
        r#"WITH new_order AS (
               INSERT INTO orders (id, customer_id, currency, total_minor)
               VALUES ($1, $2, $3, $4)
               RETURNING created_at
           ), new_lines AS (
               INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
               SELECT $1, * FROM UNNEST($5::int[], $6::text[], $7::bigint[], $8::bigint[])
           )
           SELECT created_at FROM new_order"#,
        id,
        order.customer_id().as_str(),
        order.currency().code(),
        order.total_minor(),
        &lines.line_nos,
        &lines.skus,
        &lines.quantities,
        &lines.prices,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Order::new(id, order, created_at))
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
