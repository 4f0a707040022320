//! The outbox table's SQL: what a relay claims, publishes and deletes.

use sqlx::PgConnection;
use uuid::Uuid;

/// An outbox row claimed by a relay.
pub struct Pending {
    pub seq: i64,
    pub event_id: Uuid,
    pub subject: String,
    pub payload: serde_json::Value,
    /// The trace context of the write that added the row.
    pub traceparent: Option<String>,
}

/// Locks up to `limit` of the oldest rows that no other relay holds. The rows
/// stay locked until the caller's transaction ends, so two relays never
/// publish the same row at the same time.
pub async fn claim_batch(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"SELECT seq, event_id, subject, payload, traceparent
           FROM outbox
           ORDER BY seq
           LIMIT $1
           FOR UPDATE SKIP LOCKED"#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Lets the claiming transaction commit without waiting for its WAL to
/// reach the disk. A crash can lose such a commit (the last few hundred
/// milliseconds of them at most, `wal_writer_delay` × 3), and then only
/// rows that were published come back, to be published again: the broker
/// and the consumers drop them as duplicates, as after any relay crash
/// between PubAck and DELETE. Orders are committed durably, as ever.
pub async fn commit_without_waiting_for_disk(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the row of `event_id` (the CDC relay's write path: the WAL keeps
/// the insert).
pub async fn delete_event(conn: &mut PgConnection, event_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM outbox WHERE event_id = $1", event_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes published rows, in the transaction that claimed them.
pub async fn delete(conn: &mut PgConnection, seqs: &[i64]) -> sqlx::Result<u64> {
    Ok(sqlx::query!("DELETE FROM outbox WHERE seq = ANY($1)", seqs)
        .execute(conn)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use sqlx::PgPool;

    use super::*;

    /// Adds an event to the outbox, in the caller's transaction.
    async fn insert(
        conn: &mut PgConnection,
        event_id: Uuid,
        subject: &str,
        payload: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query!(
            "INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3)",
            event_id,
            subject,
            payload
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Commits `n` outbox rows; returns their event ids, oldest first.
    async fn rows(pool: &PgPool, n: usize) -> sqlx::Result<Vec<Uuid>> {
        let mut tx = pool.begin().await?;
        let mut ids = Vec::new();
        for i in 0..n {
            let id = Uuid::now_v7();
            insert(&mut tx, id, "orders.placed", &serde_json::json!({ "n": i })).await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn remaining(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY seq")
            .fetch_all(pool)
            .await
    }

    fn ids(batch: &[Pending]) -> Vec<Uuid> {
        batch.iter().map(|p| p.event_id).collect()
    }

    #[sqlx::test]
    async fn a_claim_takes_the_oldest_rows_up_to_its_limit(pool: PgPool) -> sqlx::Result<()> {
        let inserted = rows(&pool, 3).await?;
        let mut tx = pool.begin().await?;
        let batch = claim_batch(&mut tx, 2).await?;
        assert_eq!(ids(&batch), inserted[..2]);
        assert_eq!(batch[0].subject, "orders.placed");
        assert_eq!(batch[1].payload, serde_json::json!({ "n": 1 }));
        assert!(batch[0].seq < batch[1].seq);
        Ok(())
    }

    #[sqlx::test]
    async fn a_second_relay_skips_the_rows_the_first_holds(pool: PgPool) -> sqlx::Result<()> {
        let inserted = rows(&pool, 3).await?;
        let mut first = pool.begin().await?;
        let mut second = pool.begin().await?;
        assert_eq!(ids(&claim_batch(&mut first, 2).await?), inserted[..2]);
        assert_eq!(ids(&claim_batch(&mut second, 10).await?), inserted[2..]);
        // Rolled back, the first relay's rows are free again.
        first.rollback().await?;
        second.rollback().await?;
        let mut third = pool.begin().await?;
        assert_eq!(ids(&claim_batch(&mut third, 10).await?), inserted);
        Ok(())
    }

    #[sqlx::test]
    async fn a_delete_removes_exactly_the_published_rows(pool: PgPool) -> sqlx::Result<()> {
        let inserted = rows(&pool, 3).await?;
        let mut tx = pool.begin().await?;
        let batch = claim_batch(&mut tx, 2).await?;
        let seqs: Vec<i64> = batch.iter().map(|p| p.seq).collect();
        assert_eq!(delete(&mut tx, &seqs).await?, 2);
        // Deleting again finds nothing: a retried delete is harmless.
        assert_eq!(delete(&mut tx, &seqs).await?, 0);
        tx.commit().await?;
        assert_eq!(remaining(&pool).await?, inserted[2..]);
        Ok(())
    }

    #[sqlx::test]
    async fn a_rolled_back_delete_keeps_the_rows(pool: PgPool) -> sqlx::Result<()> {
        let inserted = rows(&pool, 2).await?;
        let mut tx = pool.begin().await?;
        let seqs: Vec<i64> = claim_batch(&mut tx, 10)
            .await?
            .iter()
            .map(|p| p.seq)
            .collect();
        assert_eq!(delete(&mut tx, &seqs).await?, 2);
        tx.rollback().await?;
        assert_eq!(remaining(&pool).await?, inserted);
        Ok(())
    }

    #[sqlx::test]
    async fn a_delete_by_event_id_removes_that_row_only(pool: PgPool) -> sqlx::Result<()> {
        let inserted = rows(&pool, 3).await?;
        let mut conn = pool.acquire().await?;
        delete_event(&mut conn, inserted[1]).await?;
        assert_eq!(remaining(&pool).await?, [inserted[0], inserted[2]]);
        Ok(())
    }
}
