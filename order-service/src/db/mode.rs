//! The mode order-service runs in: the fence that every write of an order
//! checks in its own statement (see [`crate::db::orders::OrderWrite`]).

use sqlx::{PgConnection, PgPool};

/// Records `mode` as the one order-service runs in; returns the mode it
/// replaced, if it replaced one. Changing the row takes its exclusive lock,
/// so this waits for the writes in flight that checked the old mode (they
/// hold a key-share lock on it); once it commits, a write that checks the
/// old mode finds no row and stores nothing.
pub async fn switch_to(pool: &PgPool, mode: &str) -> sqlx::Result<Option<String>> {
    let mut tx = pool.begin().await?;
    // Serialises instances that start at once, without waiting for writes
    // (a no-key lock does not conflict with their key-share locks).
    let active = sqlx::query_scalar!("SELECT mode FROM order_mode FOR NO KEY UPDATE")
        .fetch_optional(&mut *tx)
        .await?;
    let replaced = match active {
        Some(active) if active == mode => None,
        Some(active) => {
            sqlx::query!("UPDATE order_mode SET mode = $1, switched_at = now()", mode)
                .execute(&mut *tx)
                .await?;
            Some(active)
        }
        None => {
            sqlx::query!(
                "INSERT INTO order_mode (mode) VALUES ($1) ON CONFLICT DO NOTHING",
                mode
            )
            .execute(&mut *tx)
            .await?;
            None
        }
    };
    tx.commit().await?;
    Ok(replaced)
}

/// The mode order-service runs in, as the last instance that started set it.
pub async fn active_on(conn: &mut PgConnection) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT mode FROM order_mode")
        .fetch_optional(conn)
        .await
}
