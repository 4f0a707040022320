//! What the API and the gauges read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a ledger entry does to the balance.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EntryKind {
    /// The points an order earned, added when it was placed.
    #[default]
    Credit,
    /// The same points taken back, when the order was cancelled.
    Reversal,
}

/// One entry of a customer's ledger, as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    /// The event applied: the order's `OrderPlaced` for a credit, its
    /// `OrderCancelled` for a reversal.
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub kind: EntryKind,
    /// What the entry adds to the balance: the points the order earned
    /// (a credit), or as many taken back (a reversal, negative).
    pub points: i64,
    /// The order's total, in minor units of `currency`.
    pub order_total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// When the entry was written.
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
        r#"SELECT event_id, order_id, kind AS "kind: EntryKind", points, order_total_minor, currency,
                  credited_at
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
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Credited {
    pub order_id: Uuid,
    pub kind: EntryKind,
    pub event_id: Uuid,
    pub customer_id: String,
    /// Positive for a credit, negative for a reversal.
    pub points: i64,
    pub order_total_minor: i64,
    pub currency: String,
    pub credited_at: DateTime<Utc>,
}

/// The entries of the first `orders` orders after `after`, in order-id
/// order (an order's credit before its reversal): a page never splits an
/// order's entries.
pub async fn ledger_page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    orders: i64,
) -> sqlx::Result<Vec<Credited>> {
    sqlx::query_as!(
        Credited,
        r#"WITH page AS (
               SELECT DISTINCT order_id FROM reward_ledger
               WHERE ($1::uuid IS NULL OR order_id > $1)
               ORDER BY order_id
               LIMIT $2
           )
           SELECT l.order_id, l.kind AS "kind: EntryKind", l.event_id, l.customer_id, l.points,
                  l.order_total_minor, l.currency, l.credited_at
           FROM reward_ledger l JOIN page USING (order_id)
           ORDER BY l.order_id, l.kind"#,
        after,
        orders
    )
    .fetch_all(conn)
    .await
}

/// Cancellations recorded before their order's credit, still waiting.
pub async fn awaiting_credit(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM reversals_awaiting_credit"#)
        .fetch_one(conn)
        .await
}
