//! All of rewards-service's SQL.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Credit;

/// Writes the ledger rows and adds to the balances for every credit whose
/// event and order were not credited before, in one statement; returns, per
/// credit, whether it was new. Call it in a transaction.
pub async fn credit_all(
    conn: &mut PgConnection,
    credits: &[(Credit, u64)],
) -> sqlx::Result<Vec<bool>> {
    let column = |f: fn(&(Credit, u64)) -> String| credits.iter().map(f).collect::<Vec<_>>();
    let event_ids: Vec<Uuid> = credits.iter().map(|(c, _)| c.event_id).collect();
    let order_ids: Vec<Uuid> = credits.iter().map(|(c, _)| c.order_id).collect();
    let customers = column(|(c, _)| c.customer_id.clone());
    let points: Vec<i64> = credits.iter().map(|(c, _)| c.points).collect();
    let totals: Vec<i64> = credits.iter().map(|(c, _)| c.order_total_minor).collect();
    let currencies = column(|(c, _)| c.currency.code().to_owned());
    let placed: Vec<DateTime<Utc>> = credits.iter().map(|(c, _)| c.order_placed_at).collect();
    let sequences: Vec<i64> = credits
        .iter()
        .map(|(_, s)| i64::try_from(*s).unwrap_or(i64::MAX))
        .collect();
    // Balances are updated in customer order, so two batches never wait on
    // each other's rows in opposite orders.
    let inserted = sqlx::query_scalar!(
        r#"WITH inserted AS (
               INSERT INTO reward_ledger
                   (event_id, order_id, customer_id, points, order_total_minor, currency,
                    order_placed_at, stream_sequence)
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[],
                                    $5::bigint[], $6::text[], $7::timestamptz[], $8::bigint[])
               ON CONFLICT DO NOTHING
               RETURNING event_id, customer_id, points
           ), balances AS (
               INSERT INTO reward_accounts (customer_id, balance)
               SELECT customer_id, sum(points)::bigint FROM inserted
               GROUP BY customer_id ORDER BY customer_id
               ON CONFLICT (customer_id)
               DO UPDATE SET balance = reward_accounts.balance + EXCLUDED.balance,
                             updated_at = now()
           )
           SELECT event_id AS "event_id!" FROM inserted"#,
        &event_ids,
        &order_ids,
        &customers,
        &points,
        &totals,
        &currencies,
        &placed,
        &sequences,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(event_ids.iter().map(|id| inserted.contains(id)).collect())
}

/// One credited order, as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerEntry {
    /// The `OrderPlaced` event that was credited.
    pub event_id: Uuid,
    pub order_id: Uuid,
    /// Points the order earned.
    pub points: i64,
    /// The order's total, in minor units of `currency`.
    pub order_total_minor: i64,
    /// ISO 4217 code.
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
#[derive(Debug, Clone, Serialize, ToSchema)]
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

#[cfg(test)]
mod tests {
    use shared_events::Currency;
    use sqlx::PgPool;

    use super::*;

    fn credit(customer: &str, points: i64) -> Credit {
        Credit {
            event_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            customer_id: customer.to_owned(),
            points,
            order_total_minor: points * 100,
            currency: Currency::from_code("EUR").expect("a known currency"),
            order_placed_at: Utc::now(),
        }
    }

    /// Credits `credits` in one transaction, numbered like stream sequences.
    async fn apply(pool: &PgPool, credits: &[Credit]) -> sqlx::Result<Vec<bool>> {
        let numbered: Vec<(Credit, u64)> = credits.iter().cloned().zip(1..).collect();
        let mut tx = pool.begin().await?;
        let new = credit_all(&mut tx, &numbered).await?;
        tx.commit().await?;
        Ok(new)
    }

    async fn ledger_rows(pool: &PgPool) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM reward_ledger")
            .fetch_one(pool)
            .await
    }

    /// Every balance next to the sum of its ledger's points, an independent truth.
    async fn balances(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
        sqlx::query_as(
            "SELECT a.customer_id, a.balance, sum(l.points)::bigint
             FROM reward_accounts a JOIN reward_ledger l USING (customer_id)
             GROUP BY a.customer_id, a.balance ORDER BY a.customer_id",
        )
        .fetch_all(pool)
        .await
    }

    #[sqlx::test]
    async fn new_credits_write_the_ledger_and_add_to_the_balances(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let credits = [credit("ivy", 10), credit("jon", 7), credit("ivy", 5)];
        assert_eq!(apply(&pool, &credits).await?, [true, true, true]);
        assert_eq!(ledger_rows(&pool).await?, 3);
        assert_eq!(
            balances(&pool).await?,
            [("ivy".to_owned(), 15, 15), ("jon".to_owned(), 7, 7)]
        );
        let mut conn = pool.acquire().await?;
        assert_eq!(balance(&mut conn, "ivy").await?, Some(15));
        assert_eq!(balance(&mut conn, "kim").await?, None);
        let entries = ledger(&mut conn, "ivy", 10).await?;
        let mut orders: Vec<Uuid> = entries.iter().map(|e| e.order_id).collect();
        orders.sort();
        let mut expected = [credits[0].order_id, credits[2].order_id];
        expected.sort();
        assert_eq!(orders, expected);
        Ok(())
    }

    #[sqlx::test]
    async fn a_redelivered_event_is_credited_once(pool: PgPool) -> sqlx::Result<()> {
        let first = credit("ivy", 10);
        assert_eq!(apply(&pool, std::slice::from_ref(&first)).await?, [true]);
        let mut same_event = credit("ivy", 10);
        same_event.event_id = first.event_id;
        let other = credit("ivy", 3);
        assert_eq!(apply(&pool, &[same_event, other]).await?, [false, true]);
        assert_eq!(ledger_rows(&pool).await?, 2);
        assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 13, 13)]);
        Ok(())
    }

    #[sqlx::test]
    async fn an_order_replayed_under_a_new_event_id_is_credited_once(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let first = credit("ivy", 10);
        assert_eq!(apply(&pool, std::slice::from_ref(&first)).await?, [true]);
        let mut replay = credit("ivy", 10);
        replay.order_id = first.order_id;
        assert_eq!(apply(&pool, &[replay]).await?, [false]);
        assert_eq!(ledger_rows(&pool).await?, 1);
        assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
        Ok(())
    }

    #[sqlx::test]
    async fn an_order_twice_in_one_batch_is_credited_once(pool: PgPool) -> sqlx::Result<()> {
        let first = credit("ivy", 10);
        let mut again = credit("ivy", 10);
        again.order_id = first.order_id;
        assert_eq!(apply(&pool, &[first, again]).await?, [true, false]);
        assert_eq!(ledger_rows(&pool).await?, 1);
        assert_eq!(balances(&pool).await?, [("ivy".to_owned(), 10, 10)]);
        Ok(())
    }
}
