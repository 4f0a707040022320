//! Publication and replication slot: created idempotently at start-up,
//! watched while running.

use anyhow::{Context as _, bail};
use sqlx::PgPool;

/// Postgres' SQLSTATE for "already exists".
const DUPLICATE_OBJECT: &str = "42710";

/// A name that is safe to splice into SQL as an identifier.
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `<database>_<suffix>`, made a valid slot name: slots are per cluster, so
/// the database name keeps two deployments on one server apart.
pub async fn default_name(pool: &PgPool, suffix: &str) -> anyhow::Result<String> {
    let database: String = sqlx::query_scalar!(r#"SELECT current_database() AS "db!""#)
        .fetch_one(pool)
        .await?;
    let mut name: String = database
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    name.truncate(63 - suffix.len() - 1);
    Ok(format!("{name}_{suffix}"))
}

/// Creates the publication (inserts only) on `tables` unless it exists.
pub async fn ensure_publication(pool: &PgPool, name: &str, tables: &[&str]) -> anyhow::Result<()> {
    if !valid_identifier(name) || !tables.iter().all(|t| valid_identifier(t)) {
        bail!("publication {name:?} or its tables {tables:?} are not plain identifiers");
    }
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS "exists!""#,
        name
    )
    .fetch_one(pool)
    .await?;
    if exists {
        return Ok(());
    }
    let create = format!(
        "CREATE PUBLICATION {name} FOR TABLE {} WITH (publish = 'insert')",
        tables.join(", ")
    );
    ignore_duplicate(sqlx::raw_sql(&create).execute(pool).await.map(drop))
        .with_context(|| format!("creating publication {name}"))
}

/// Creates the logical slot (plugin `pgoutput`) unless it exists, and fails
/// if it exists but can no longer be used.
pub async fn ensure_slot(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    match status(pool, name).await? {
        Some(status) => status.usable(name),
        None => ignore_duplicate(
            sqlx::query!(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput') IS NOT NULL AS created",
                name
            )
            .fetch_one(pool)
            .await
            .map(drop),
        )
        .with_context(|| format!("creating replication slot {name}")),
    }
}

fn ignore_duplicate(result: sqlx::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => Ok(()),
        other => Ok(other?),
    }
}

/// What the server says about a slot.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Backend holding the slot, if a reader is attached.
    pub active_pid: Option<i32>,
    /// WAL the slot keeps from being removed.
    pub retained_bytes: Option<i64>,
    /// WAL written since the confirmed position.
    pub confirmed_lag_bytes: Option<i64>,
}

impl SlotStatus {
    /// An error explaining how to recover when the slot lost WAL it needed.
    pub fn usable(&self, name: &str) -> anyhow::Result<()> {
        if self.wal_status.as_deref() == Some("lost") {
            bail!(
                "replication slot {name} is lost: PostgreSQL removed WAL it still needed \
                 (max_slot_wal_keep_size), so changes since its last confirmed position \
                 cannot be captured. Recover: drop the slot (SELECT pg_drop_replication_slot('{name}')), \
                 restart order-service to create a new one, then re-publish the orders \
                 written since the last event the stream holds"
            );
        }
        Ok(())
    }
}

/// The slot's status, or `None` if there is no such slot.
pub async fn status(pool: &PgPool, name: &str) -> anyhow::Result<Option<SlotStatus>> {
    Ok(sqlx::query_as!(
        SlotStatus,
        r#"SELECT wal_status,
                  active_pid,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                      AS confirmed_lag_bytes
           FROM pg_replication_slots
           WHERE slot_name = $1"#,
        name
    )
    .fetch_optional(pool)
    .await?)
}

/// Writes a tiny non-transactional logical message to the WAL. When it comes
/// back through the stream with nothing in flight, the reader confirms its
/// position: that is what keeps an idle slot from retaining WAL while other
/// tables are busy.
pub async fn heartbeat(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query!("SELECT pg_logical_emit_message(false, 'order-events.heartbeat', '')::text AS lsn")
        .fetch_one(pool)
        .await
        .map(drop)
}
