//! A batch of credits, in one statement: the path every placement takes
//! while no cancellation is in its batch.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Credit;

/// Writes the ledger rows and adds to the balances for every credit whose
/// event and order were not credited before, and applies the cancellations
/// that were awaiting those credits (a reversal row each, netted in the same
/// balance update), in one statement; returns, per credit, whether it was
/// new. Call it in a transaction, after [`lock_orders`](super::lock_orders)
/// on the credits' orders.
///
/// A cancellation awaiting its credit is applied only if it names the
/// credited customer, total and currency; one that does not reverses
/// nothing and stays recorded, in the gauge of those waiting.
pub async fn credit_all(
    conn: &mut PgConnection,
    credits: &[(&Credit, u64)],
) -> sqlx::Result<Vec<bool>> {
    let column = |f: fn(&(&Credit, u64)) -> String| credits.iter().map(f).collect::<Vec<_>>();
    let event_ids: Vec<Uuid> = credits.iter().map(|(c, _)| c.event_id).collect();
    let order_ids: Vec<Uuid> = credits.iter().map(|(c, _)| c.order_id).collect();
    let customers = column(|(c, _)| c.customer_id.clone());
    let points: Vec<i64> = credits.iter().map(|(c, _)| c.points).collect();
    let totals: Vec<i64> = credits.iter().map(|(c, _)| c.order_total_minor).collect();
    let currencies = column(|(c, _)| c.currency.code().to_owned());
    let placed: Vec<DateTime<Utc>> = credits.iter().map(|(c, _)| c.order_placed_at).collect();
    let sequences: Vec<i64> = credits.iter().map(|(_, s)| sequence(*s)).collect();
    // Balances are updated in customer order, so two batches never wait on
    // each other's rows in opposite orders. A customer's credit and its
    // reversal net to zero in one update: the balance never goes below it.
    let inserted = sqlx::query_scalar!(
        r#"WITH inserted AS (
               INSERT INTO reward_ledger
                   (event_id, order_id, customer_id, points, order_total_minor, currency,
                    order_placed_at, stream_sequence)
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[],
                                    $5::bigint[], $6::text[], $7::timestamptz[], $8::bigint[])
               ON CONFLICT DO NOTHING
               RETURNING event_id, order_id, customer_id, points, order_total_minor, currency,
                         order_placed_at
           ), awaited AS (
               DELETE FROM reversals_awaiting_credit w
               USING inserted i
               WHERE w.order_id = i.order_id AND w.customer_id = i.customer_id
                 AND w.order_total_minor = i.order_total_minor AND w.currency = i.currency
               RETURNING w.event_id, w.order_id, w.stream_sequence, i.customer_id, i.points,
                         i.order_total_minor, i.currency, i.order_placed_at
           ), reversed AS (
               INSERT INTO reward_ledger
                   (event_id, order_id, kind, customer_id, points, order_total_minor, currency,
                    order_placed_at, stream_sequence)
               SELECT event_id, order_id, 'reversal', customer_id, -points, order_total_minor,
                      currency, order_placed_at, stream_sequence
               FROM awaited
               RETURNING customer_id, points
           ), balances AS (
               INSERT INTO reward_accounts (customer_id, balance)
               SELECT customer_id, sum(points)::bigint
               FROM (SELECT customer_id, points FROM inserted
                     UNION ALL
                     SELECT customer_id, points FROM reversed) AS changed
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

/// A stream sequence as PostgreSQL stores it.
pub(super) fn sequence(stream_sequence: u64) -> i64 {
    i64::try_from(stream_sequence).unwrap_or(i64::MAX)
}
