//! The replication slot: created once and remembered in order-service's own
//! database, checked against that memory at every start, watched while
//! running, and dropped only after it was drained.
//!
//! Why remember it: a slot that vanished (a failover to a standby, a restore,
//! a manual drop) and is silently recreated starts at the current end of the
//! WAL, skipping every order the old one had not confirmed. So a remembered
//! slot that is gone, lost, or from another server stops start-up with the
//! recovery command instead. And since a slot can also be swapped under the
//! same name (recreated, advanced by someone else), the memory holds the last
//! position order-service confirmed, written before each confirmation: a slot
//! standing past it was not moved by order-service, and is refused too.

use std::time::Duration;

use anyhow::{Context as _, bail};
use pgwire_replication::Lsn;
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
         `{RESYNC_COMMAND}` (it re-publishes OrderPlaced for every order the stream does not \
         hold, or for those created since --since <RFC 3339 time>, then forgets the slot), \
         then start order-service again"
    )
}

/// Makes sure the slot `name` exists and is the one order-service remembers:
/// creates and remembers it on first use, adopts an existing slot nobody
/// remembered (made by an older version), and refuses a remembered slot
/// that is not as order-service left it (see [`check_remembered`]).
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
    if remembered.is_some() {
        return check_remembered(pool, name).await;
    }
    let position = match status(pool, name).await? {
        Some(status) => {
            status.usable(name)?;
            if let Some(problem) = foreign_kind(&status) {
                bail!(
                    "replication slot {name} {problem}: drop it, or give this deployment \
                     another slot prefix (CDC_SLOT)"
                );
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

/// Refuses the remembered slot `name` if it is gone, lost, from another
/// server, not a `pgoutput` logical slot, or standing past the last position
/// order-service confirmed on it (see [`mismatch`]). A slot remembered by an
/// older version, with no confirmed position yet, is taken as found.
pub async fn check_remembered(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    let (found, remembered) = found_then_remembered(pool, name).await?;
    let remembered =
        remembered.with_context(|| format!("replication slot {name} is not remembered"))?;
    if let Some(problem) = mismatch(&remembered, found.as_ref()) {
        return Err(resync_needed(name, &problem));
    }
    if let Some(found) = &found {
        found.usable(name)?;
        if remembered.confirmed_lsn.is_none() {
            tracing::info!(slot = %name, position = %found.position, "remembering the slot's confirmed position");
            cdc_slots::record_confirmed(&mut *pool.acquire().await?, name, &found.position).await?;
        }
    }
    Ok(())
}

/// The slot `name` as the server has it, then as order-service remembers
/// it: in this order, because a running reader writes its memory before it
/// moves the slot, so a memory read after the slot covers the slot's
/// position even while another instance streams.
pub async fn found_then_remembered(
    pool: &PgPool,
    name: &str,
) -> anyhow::Result<(Option<SlotStatus>, Option<cdc_slots::RememberedSlot>)> {
    let found = status(pool, name).await?;
    let remembered = cdc_slots::find(&mut *pool.acquire().await?, name)
        .await
        .context("reading the remembered replication slots")?;
    Ok((found, remembered))
}

/// What makes the slot found under a remembered name not the one
/// order-service made and moved, if anything; `None` when it is.
///
/// The reader writes each position into its memory before it confirms it,
/// so a slot only order-service moved never stands past the remembered
/// position (behind it is normal: PostgreSQL writes a slot's position to
/// disk at checkpoints, and after a crash the slot replays). Past it, the
/// slot was moved by someone else: dropped and created again under the same
/// name (a new slot starts at the end of the WAL, which is past the memory's
/// own last write), advanced with `pg_replication_slot_advance`, or confirmed
/// by another reader. Either way it skipped changes order-service never
/// published.
pub fn mismatch(
    remembered: &cdc_slots::RememberedSlot,
    found: Option<&SlotStatus>,
) -> Option<String> {
    if !remembered.same_system {
        return Some(
            "was created on another PostgreSQL server (the system identifier differs: \
             a restore or a new cluster)"
                .to_owned(),
        );
    }
    let Some(found) = found else {
        return Some(format!(
            "was created at LSN {} on {} and is gone (a failover to a standby, a restore, \
             or a manual drop)",
            remembered.created_lsn, remembered.created_at
        ));
    };
    if found.wal_status.as_deref() == Some("lost") {
        return Some(
            "is lost: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size)".to_owned(),
        );
    }
    if let Some(problem) = foreign_kind(found) {
        return Some(format!(
            "{problem}, so it is not the slot order-service created"
        ));
    }
    let confirmed = remembered.confirmed_lsn.as_deref()?;
    let ahead = match (Lsn::parse(&found.position), Lsn::parse(confirmed)) {
        (Ok(found), Ok(confirmed)) => found > confirmed,
        _ => {
            return Some(format!(
                "has an unreadable position ({} or {confirmed})",
                found.position
            ));
        }
    };
    ahead.then(|| {
        format!(
            "stands at LSN {}, past LSN {confirmed}, the last position order-service confirmed \
             on it: order-service did not move it there (it was dropped and created again \
             under the same name, advanced with pg_replication_slot_advance, or confirmed by \
             another reader)",
            found.position
        )
    })
}

/// Why a slot is not of the kind order-service creates (logical, `pgoutput`).
fn foreign_kind(found: &SlotStatus) -> Option<String> {
    if found.slot_type != "logical" {
        return Some(format!("is a {} slot, not a logical one", found.slot_type));
    }
    match found.plugin.as_deref() {
        Some("pgoutput") => None,
        other => Some(format!(
            "decodes with plugin {}, not pgoutput",
            other.unwrap_or("(none)")
        )),
    }
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
    /// `logical` or `physical`.
    pub slot_type: String,
    /// The output plugin of a logical slot.
    pub plugin: Option<String>,
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
                  COALESCE(confirmed_flush_lsn, restart_lsn, '0/0')::text AS "position!",
                  slot_type AS "slot_type!",
                  plugin::text AS plugin,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(confirmed: Option<&str>) -> cdc_slots::RememberedSlot {
        cdc_slots::RememberedSlot {
            slot_name: "s".into(),
            label: "orders".into(),
            publication: "p".into(),
            created_lsn: "0/100".into(),
            confirmed_lsn: confirmed.map(str::to_owned),
            created_at: chrono::DateTime::UNIX_EPOCH,
            drained_at: None,
            same_system: true,
        }
    }

    fn found(position: &str) -> SlotStatus {
        SlotStatus {
            wal_status: Some("reserved".into()),
            active_pid: None,
            retained_bytes: None,
            confirmed_lag_bytes: None,
            position: position.into(),
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            this_database: true,
        }
    }

    #[test]
    fn a_slot_at_or_behind_the_confirmed_memory_is_the_one_order_service_moved() {
        let memory = remembered(Some("0/2000"));
        assert_eq!(mismatch(&memory, Some(&found("0/2000"))), None);
        // Behind: PostgreSQL had not written the slot's position to disk
        // before it crashed; the slot replays.
        assert_eq!(mismatch(&memory, Some(&found("0/1FFF"))), None);
        // Remembered by an older version: taken as found.
        assert_eq!(mismatch(&remembered(None), Some(&found("9/0"))), None);
    }

    #[test]
    fn a_slot_past_the_confirmed_memory_is_refused_with_both_positions() {
        let problem = mismatch(&remembered(Some("0/2000")), Some(&found("1/10"))).unwrap();
        assert!(problem.contains("1/10"), "{problem}");
        assert!(problem.contains("0/2000"), "{problem}");
        // Compared as positions, not as text.
        assert!(mismatch(&remembered(Some("0/FFFF")), Some(&found("0/10000"))).is_some());
    }

    #[test]
    fn a_slot_of_another_kind_under_the_remembered_name_is_refused() {
        let memory = remembered(Some("0/2000"));
        let mut other_plugin = found("0/2000");
        other_plugin.plugin = Some("test_decoding".into());
        let problem = mismatch(&memory, Some(&other_plugin)).unwrap();
        assert!(problem.contains("test_decoding"), "{problem}");
        let mut physical = found("0/2000");
        (physical.slot_type, physical.plugin) = ("physical".into(), None);
        assert!(mismatch(&memory, Some(&physical)).is_some());
    }

    #[test]
    fn a_gone_lost_or_foreign_slot_is_refused() {
        let memory = remembered(Some("0/2000"));
        assert!(mismatch(&memory, None).unwrap().contains("is gone"));
        let mut lost = found("0/2000");
        lost.wal_status = Some("lost".into());
        assert!(mismatch(&memory, Some(&lost)).unwrap().contains("is lost"));
        let foreign = cdc_slots::RememberedSlot {
            same_system: false,
            ..memory
        };
        assert!(
            mismatch(&foreign, Some(&found("0/2000")))
                .unwrap()
                .contains("another PostgreSQL server")
        );
    }
}
