//! The replication slot: created once and remembered in order-service's own
//! database, checked against that memory at every start, watched while
//! running, and dropped only after it was drained.
//!
//! Why remember it: a slot that vanished (a failover to a standby, a restore,
//! a manual drop) and is silently recreated starts at the current end of the
//! WAL, skipping every order the old one had not confirmed. So a remembered
//! slot that is gone, lost, or from another server stops start-up with the
//! recovery command instead.

use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::db::cdc_slots;

/// Postgres' SQLSTATE for "already exists".
const DUPLICATE_OBJECT: &str = "42710";
/// Postgres' SQLSTATE for "object in use" (a session still holds the slot).
pub(super) const OBJECT_IN_USE: &str = "55006";
/// Postgres' SQLSTATE for "undefined object".
pub(super) const UNDEFINED_OBJECT: &str = "42704";

/// The operator command that recovers from a lost slot.
pub const RESYNC_COMMAND: &str = "order-events cdc resync";

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

/// The error that stops start-up (or the reader) when changes a slot held
/// may be lost: it names the recovery command.
pub fn resync_needed(name: &str, what_happened: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "replication slot {name} {what_happened}. Orders committed since its last confirmed \
         position may never have been published, and a new slot would skip them for good, \
         so order-service does not go on without an operator. Recover: stop every \
         order-service, run \
         `{RESYNC_COMMAND}` (it re-publishes OrderPlaced for the orders committed since the \
         last one the stream holds, or since --since <RFC 3339 time>, then forgets the slot), \
         then start order-service again"
    )
}

/// Makes sure the slot `name` exists and is the one order-service remembers:
/// creates and remembers it on first use, adopts an existing slot nobody
/// remembered (made by an older version), and refuses when a remembered slot
/// is gone, lost, or was made on another server.
pub async fn ensure_remembered(
    pool: &PgPool,
    name: &str,
    label: &str,
    publication: &str,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut remembered = cdc_slots::find(&mut conn, name)
        .await
        .context("reading the remembered replication slots")?;
    if remembered.as_ref().is_some_and(|r| r.drained_at.is_some()) {
        // Drained when an earlier run switched away from it: whatever it
        // holds now was published by the mode that ran since. Start afresh.
        drop_slot(pool, name, Instant::now() + Duration::from_secs(10)).await?;
        cdc_slots::forget(&mut conn, name).await?;
        remembered = None;
    }
    let found = status(pool, name).await?;
    if let Some(remembered) = &remembered {
        if !remembered.same_system {
            return Err(resync_needed(
                name,
                "was created on another PostgreSQL server (the system identifier differs: \
                 a restore or a new cluster)",
            ));
        }
        if found.is_none() {
            return Err(resync_needed(
                name,
                &format!(
                    "was created at LSN {} on {} and is gone (a failover to a standby, \
                     a restore, or a manual drop)",
                    remembered.created_lsn, remembered.created_at
                ),
            ));
        }
    }
    let position = match found {
        Some(status) => {
            status.usable(name)?;
            if remembered.is_some() {
                return Ok(());
            }
            tracing::warn!(slot = name, "adopting a replication slot nobody remembered");
            status.position
        }
        None => create(pool, name).await?,
    };
    cdc_slots::remember(&mut conn, name, label, publication, &position)
        .await
        .with_context(|| format!("remembering replication slot {name}"))
}

/// Creates the logical slot (plugin `pgoutput`); the position it starts at.
async fn create(pool: &PgPool, name: &str) -> anyhow::Result<String> {
    let created = sqlx::query_scalar!(
        r#"SELECT lsn::text AS "lsn!" FROM pg_create_logical_replication_slot($1, 'pgoutput')"#,
        name
    )
    .fetch_one(pool)
    .await;
    match created {
        Ok(lsn) => {
            tracing::info!(slot = name, %lsn, "created the replication slot");
            Ok(lsn)
        }
        // Another instance created it a moment ago.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => {
            match status(pool, name).await? {
                Some(status) => Ok(status.position),
                None => bail!("replication slot {name} was created and dropped concurrently"),
            }
        }
        Err(error) => Err(error).with_context(|| format!("creating replication slot {name}")),
    }
}

/// Drops the slot `name` (gone already is fine), waiting until `deadline`
/// for the session that held it to let go.
pub async fn drop_slot(pool: &PgPool, name: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let dropped = sqlx::query!("SELECT pg_drop_replication_slot($1)::text AS dropped", name)
            .fetch_one(pool)
            .await;
        match dropped {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_OBJECT) => {
                return Ok(());
            }
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(OBJECT_IN_USE) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("dropping replication slot {name}"));
            }
        }
    }
}

pub(super) fn ignore_duplicate(result: sqlx::Result<()>) -> anyhow::Result<()> {
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
    /// The confirmed position (or where the slot starts).
    pub position: String,
    /// Whether the slot belongs to the database we are connected to.
    pub this_database: bool,
}

impl SlotStatus {
    /// An error explaining how to recover when the slot cannot be used.
    pub fn usable(&self, name: &str) -> anyhow::Result<()> {
        if !self.this_database {
            bail!(
                "replication slot {name} belongs to another database on this server: \
                 give this deployment its own slot prefix (CDC_SLOT)"
            );
        }
        if self.wal_status.as_deref() == Some("lost") {
            return Err(resync_needed(
                name,
                "is lost: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size)",
            ));
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
                      AS confirmed_lag_bytes,
                  COALESCE(confirmed_flush_lsn, restart_lsn)::text AS "position!",
                  database IS NOT DISTINCT FROM current_database() AS "this_database!"
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

/// The prefix of the message that marks where a drain ends.
pub const DRAIN_MARKER: &str = "order-events.drain";

/// Writes a drain marker with `token` to the WAL: every transaction that
/// committed before it streams before it.
pub async fn drain_marker(pool: &PgPool, token: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "SELECT pg_logical_emit_message(false, 'order-events.drain', $1)::text AS lsn",
        token
    )
    .fetch_one(pool)
    .await
    .map(drop)
}
