use sqlx::PgConnection;
use uuid::Uuid;

/// Adds an event to the outbox, in the caller's transaction.
pub async fn insert(
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

/// An outbox row claimed by a relay.
pub struct Pending {
    pub seq: i64,
    pub event_id: Uuid,
    pub subject: String,
    pub payload: serde_json::Value,
}

/// Locks up to `limit` of the oldest rows that no other relay holds. The rows
/// stay locked until the caller's transaction ends, so two relays never
/// publish the same row at the same time.
pub async fn claim_batch(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Pending>> {
    sqlx::query_as!(
        Pending,
        r#"SELECT seq, event_id, subject, payload
           FROM outbox
           ORDER BY seq
           LIMIT $1
           FOR UPDATE SKIP LOCKED"#,
        limit
    )
    .fetch_all(conn)
    .await
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
