//! What a build without the outbox relay can still see of the outbox: rows a
//! previous run left pending, which it cannot publish itself.

use sqlx::PgConnection;

/// Outbox rows waiting to be published.
pub async fn outbox_rows(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
        .fetch_one(conn)
        .await
}
