//! Self-read's SQL: the projector's inbox, and the announcements of
//! projected orders. The projector notifies [`CHANNEL`] in its batch
//! transaction, so PostgreSQL delivers the ids only if and when the orders
//! are committed; `?wait` readers listen for them ([`super::announcements`]).

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

/// The LISTEN/NOTIFY channel; per database, as NOTIFY is.
pub const CHANNEL: &str = "orders_projected";

/// Ids per notification: a payload must stay under 8000 bytes, and an id
/// takes 37 (36 and a comma).
const IDS_PER_NOTIFICATION: i64 = 200;

/// Notifies `ids` as comma-separated lists, delivered at COMMIT.
pub async fn announce(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "SELECT pg_notify($1, string_agg(id::text, ',' ORDER BY n))
         FROM unnest($2::uuid[]) WITH ORDINALITY AS ids (id, n)
         GROUP BY (n - 1) / $3",
        CHANNEL,
        ids,
        IDS_PER_NOTIFICATION,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The ids of one notification's payload; anything else in it is skipped.
pub fn parse(payload: &str) -> Vec<Uuid> {
    payload
        .split(',')
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}
