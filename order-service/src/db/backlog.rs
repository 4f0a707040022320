//! What waits in order-service's database, for `/metrics` in every mode:
//! the outbox's backlog (rows an earlier mode or a build with the relay left
//! count too), and the cancellations the order history holds until their
//! order comes (self-read's, left behind by a switch too).

use sqlx::PgConnection;

/// What waits in the outbox.
pub struct Backlog {
    pub rows: i64,
    /// Age of the oldest row; zero when there is none.
    pub oldest: std::time::Duration,
}

/// How many rows wait, and for how long the oldest has. Counts the rows a
/// relay is publishing too, until its DELETE commits.
pub async fn outbox(conn: &mut PgConnection) -> sqlx::Result<Backlog> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "rows!",
                  COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)), 0)::float8 AS "oldest!"
           FROM outbox"#
    )
    .fetch_one(conn)
    .await?;
    Ok(Backlog {
        rows: row.rows,
        oldest: std::time::Duration::from_secs_f64(row.oldest.max(0.0)),
    })
}

/// How many cancellations wait for their order's `OrderPlaced`.
pub async fn cancellations_awaiting_order(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "waiting!" FROM cancellations_awaiting_order"#)
        .fetch_one(conn)
        .await
}
