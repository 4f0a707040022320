use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{NewOrder, Order, OrderLine};

/// Inserts `order` under `id` with its lines; returns it as stored.
pub async fn insert(conn: &mut PgConnection, id: Uuid, order: &NewOrder) -> sqlx::Result<Order> {
    let created_at = sqlx::query_scalar!(
        r#"INSERT INTO orders (id, customer_id, currency, total_minor)
           VALUES ($1, $2, $3, $4)
           RETURNING created_at"#,
        id,
        order.customer_id().as_str(),
        order.currency().code(),
        order.total_minor(),
    )
    .fetch_one(&mut *conn)
    .await?;

    let lines = order.lines();
    let line_nos: Vec<i32> = (1..).take(lines.len()).collect();
    let skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
    let quantities: Vec<i64> = lines.iter().map(|l| l.quantity).collect();
    let prices: Vec<i64> = lines.iter().map(|l| l.unit_price_minor).collect();
    sqlx::query!(
        r#"INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
           SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::bigint[], $5::bigint[])"#,
        id,
        &line_nos,
        &skus,
        &quantities,
        &prices,
    )
    .execute(&mut *conn)
    .await?;

    Ok(Order {
        id,
        customer_id: order.customer_id().as_str().to_owned(),
        currency: order.currency().code().to_owned(),
        total_minor: order.total_minor(),
        lines: lines.to_vec(),
        created_at,
    })
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

/// One page of orders in id order (ids are UUID v7, so that is creation order),
/// optionally of one customer, starting after `after`.
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
             AND ($2::uuid IS NULL OR id > $2)
           ORDER BY id
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
    let mut orders: Vec<Order> = heads
        .into_iter()
        .map(|h| Order {
            id: h.id,
            customer_id: h.customer_id,
            currency: h.currency,
            total_minor: h.total_minor,
            lines: Vec::new(),
            created_at: h.created_at,
        })
        .collect();
    for row in rows {
        if let Ok(i) = ids.binary_search(&row.order_id) {
            orders[i].lines.push(OrderLine {
                sku: row.sku,
                quantity: row.quantity,
                unit_price_minor: row.unit_price_minor,
            });
        }
    }
    Ok(orders)
}
