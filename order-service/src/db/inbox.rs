use sqlx::PgConnection;
use uuid::Uuid;

/// Records that `event_id` was applied, in the applying transaction; false
/// if it had been before.
pub async fn record(conn: &mut PgConnection, event_id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query!(
        "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING",
        event_id
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}
