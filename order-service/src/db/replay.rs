//! Orders read back in commit-time order, to publish them again (the
//! `order-events cdc resync` operator command).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Order, OrderLine};

/// Where a page of [`created_since`] ends: the next page starts after it.
pub type Cursor = (DateTime<Utc>, Uuid);

/// Up to `limit` orders created at or after `since` (every order without
/// it), and after `after`, oldest first, with their lines, in one query.
pub async fn created_since(
    conn: &mut PgConnection,
    since: Option<DateTime<Utc>>,
    after: Option<Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    let (after_at, after_id) = after.unzip();
    let rows = sqlx::query!(
        r#"SELECT o.id, o.customer_id, o.currency, o.total_minor, o.created_at,
                  o.status, o.cancelled_at,
                  array_agg(l.sku ORDER BY l.line_no) AS "skus!",
                  array_agg(l.quantity ORDER BY l.line_no) AS "quantities!",
                  array_agg(l.unit_price_minor ORDER BY l.line_no) AS "prices!"
           FROM orders o
           JOIN order_lines l ON l.order_id = o.id
           WHERE ($1::timestamptz IS NULL OR o.created_at >= $1)
             AND ($2::timestamptz IS NULL OR (o.created_at, o.id) > ($2, $3))
           GROUP BY o.id
           ORDER BY o.created_at, o.id
           LIMIT $4"#,
        since,
        after_at,
        after_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let mut order = Order::stored(
                row.id,
                &row.customer_id,
                &row.currency,
                row.total_minor,
                row.created_at,
            )
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .with_stored_status(&row.status, row.cancelled_at)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            order.lines = row
                .skus
                .into_iter()
                .zip(row.quantities)
                .zip(row.prices)
                .map(|((sku, quantity), unit_price_minor)| OrderLine {
                    sku,
                    quantity,
                    unit_price_minor,
                })
                .collect();
            Ok(order)
        })
        .collect()
}
