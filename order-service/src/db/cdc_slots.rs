//! The replication slots order-service remembers having created, so that a
//! slot that vanished is noticed instead of silently recreated.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// A slot order-service created (or adopted) on this database.
#[derive(Debug, Clone)]
pub struct RememberedSlot {
    pub slot_name: String,
    /// `orders` (cdc mode) or `outbox` (the CDC outbox relay).
    pub label: String,
    pub publication: String,
    pub created_lsn: String,
    /// The last position order-service confirmed on the slot, written before
    /// it was handed to PostgreSQL (`None`: remembered by an older version).
    pub confirmed_lsn: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When everything the slot held was published, before it was dropped:
    /// such a slot is never streamed again.
    pub drained_at: Option<DateTime<Utc>>,
    /// False when the server is not the one the slot was created on (a
    /// restore into another cluster): the slot's position means nothing here.
    pub same_system: bool,
}

/// Every remembered slot, oldest first.
pub async fn all(conn: &mut PgConnection) -> sqlx::Result<Vec<RememberedSlot>> {
    sqlx::query_as!(
        RememberedSlot,
        r#"SELECT slot_name, label, publication, created_lsn::text AS "created_lsn!",
                  confirmed_lsn::text AS confirmed_lsn, created_at, drained_at,
                  system_identifier = (SELECT system_identifier FROM pg_control_system())
                      AS "same_system!"
           FROM cdc_slots
           ORDER BY created_at, slot_name"#
    )
    .fetch_all(conn)
    .await
}

/// The remembered slot `name`, if any.
pub async fn find(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<RememberedSlot>> {
    sqlx::query_as!(
        RememberedSlot,
        r#"SELECT slot_name, label, publication, created_lsn::text AS "created_lsn!",
                  confirmed_lsn::text AS confirmed_lsn, created_at, drained_at,
                  system_identifier = (SELECT system_identifier FROM pg_control_system())
                      AS "same_system!"
           FROM cdc_slots
           WHERE slot_name = $1"#,
        name
    )
    .fetch_optional(conn)
    .await
}

/// Remembers the slot `name`, created (or found) at `created_lsn` on this
/// server: the position it stands at is the first one order-service owns.
pub async fn remember(
    conn: &mut PgConnection,
    name: &str,
    label: &str,
    publication: &str,
    created_lsn: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO cdc_slots
               (slot_name, label, publication, created_lsn, confirmed_lsn, system_identifier)
           VALUES ($1, $2, $3, $4::text::pg_lsn, $4::text::pg_lsn,
                   (SELECT system_identifier FROM pg_control_system()))
           ON CONFLICT (slot_name) DO NOTHING"#,
        name,
        label,
        publication,
        created_lsn
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the slot `name`; true if it was remembered.
pub async fn forget(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query!("DELETE FROM cdc_slots WHERE slot_name = $1", name)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Records that everything the slot `name` held was published.
pub async fn mark_drained(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE cdc_slots SET drained_at = now() WHERE slot_name = $1",
        name
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that order-service is about to confirm `lsn` on the slot `name`
/// (the remembered position only grows: a reader replaying after a crash
/// confirms less than an earlier one did). False when the slot is no longer
/// remembered.
pub async fn record_confirmed(
    conn: &mut PgConnection,
    name: &str,
    lsn: &str,
) -> sqlx::Result<bool> {
    Ok(sqlx::query!(
        r#"UPDATE cdc_slots SET confirmed_lsn = GREATEST(confirmed_lsn, $2::text::pg_lsn)
           WHERE slot_name = $1"#,
        name,
        lsn
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The remembered slots a session holds now (a reader streams them).
pub async fn held(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT c.slot_name
           FROM cdc_slots c JOIN pg_replication_slots s ON s.slot_name = c.slot_name
           WHERE s.active
           ORDER BY c.slot_name"#
    )
    .fetch_all(conn)
    .await
}
