//! All of rewards-service's SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Credit;

/// Writes the ledger row and adds to the balance, unless this event or this
/// order was credited before. Returns whether anything was credited. Call it
/// in a transaction: the two writes stand or fall together.
pub async fn credit(
    conn: &mut PgConnection,
    credit: &Credit,
    stream_sequence: u64,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"INSERT INTO reward_ledger
               (event_id, order_id, customer_id, points, order_total_minor, currency,
                order_placed_at, stream_sequence)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT DO NOTHING"#,
        credit.event_id,
        credit.order_id,
        credit.customer_id,
        credit.points,
        credit.order_total_minor,
        credit.currency.code(),
        credit.order_placed_at,
        i64::try_from(stream_sequence).unwrap_or(i64::MAX),
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    sqlx::query!(
        r#"INSERT INTO reward_accounts (customer_id, balance) VALUES ($1, $2)
           ON CONFLICT (customer_id)
           DO UPDATE SET balance = reward_accounts.balance + EXCLUDED.balance, updated_at = now()"#,
        credit.customer_id,
        credit.points
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// One credited order, as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub points: i64,
    pub order_total_minor: i64,
    pub currency: String,
    pub credited_at: DateTime<Utc>,
}

/// A customer's balance, if they have an account.
pub async fn balance(conn: &mut PgConnection, customer_id: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        "SELECT balance FROM reward_accounts WHERE customer_id = $1",
        customer_id
    )
    .fetch_optional(conn)
    .await
}

/// The customer's most recent ledger entries, newest first.
pub async fn ledger(
    conn: &mut PgConnection,
    customer_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<LedgerEntry>> {
    sqlx::query_as!(
        LedgerEntry,
        r#"SELECT event_id, order_id, points, order_total_minor, currency, credited_at
           FROM reward_ledger WHERE customer_id = $1
           ORDER BY credited_at DESC, event_id DESC
           LIMIT $2"#,
        customer_id,
        limit
    )
    .fetch_all(conn)
    .await
}

/// One ledger row as the audit sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Credited {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub customer_id: String,
    pub points: i64,
    pub order_total_minor: i64,
    pub currency: String,
    pub credited_at: DateTime<Utc>,
}

/// A page of the whole ledger in order-id order, after `after`.
pub async fn ledger_page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Credited>> {
    sqlx::query_as!(
        Credited,
        r#"SELECT order_id, event_id, customer_id, points, order_total_minor, currency, credited_at
           FROM reward_ledger
           WHERE ($1::uuid IS NULL OR order_id > $1)
           ORDER BY order_id
           LIMIT $2"#,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}
