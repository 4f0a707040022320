//! What a build without the outbox relay can still see of the outbox: rows a
//! previous run left pending, which it cannot publish itself.

use sqlx::PgConnection;

/// Outbox rows waiting to be published.
pub async fn outbox_rows(conn: &mut PgConnection) -> sqlx::Result<i64> {
    // A runtime query: `.sqlx/` is prepared with all features on, which
    // leaves this module out.
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(conn)
        .await
}
