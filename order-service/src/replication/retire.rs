//! Retiring a slot a switch leaves behind (cdc mode to another mode, or the
//! CDC outbox relay to polling): what the slot still holds is read to the
//! current end of the WAL, published and confirmed; only then is the slot
//! dropped and forgotten. Dropping it first would lose every order it had
//! not confirmed.
//!
//! The end is a drain marker, a non-transactional logical message written
//! just before streaming: every transaction that committed before it is
//! streamed before it. The slot is marked drained before it is dropped, so a
//! crash in between is finished at the next start instead of being taken
//! for a lost slot.

use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::reader::SessionError;
use super::{Capture, Reader, slot};
use crate::db::cdc_slots;

/// Pause between attempts while another session holds the slot or the
/// stream fails.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl<C: Capture> Reader<C> {
    /// Publishes everything the slot holds, then drops and forgets it.
    /// Fails when the slot is gone, lost, or not as order-service left it
    /// (its changes may be lost: resync) or still held by another session at `deadline`.
    pub async fn retire(mut self, deadline: Instant) -> anyhow::Result<()> {
        let name = self.settings.slot.clone();
        // Drained from where order-service left it, or not at all: a slot
        // that is gone or was moved by someone else skipped orders already.
        slot::check_remembered(&self.pool, &name)
            .await
            .context("the slot still had to be drained after a switch")?;
        let token = Uuid::now_v7().to_string();
        slot::drain_marker(&self.pool, &token)
            .await
            .context("writing the drain marker")?;
        let running = CancellationToken::new();
        loop {
            let error = match self.session(&running, Some(&token)).await {
                Ok(true) => break,
                Ok(false) => anyhow::anyhow!("the session ended before the drain marker"),
                Err(SessionError::Fatal(error)) => return Err(error),
                Err(SessionError::SlotBusy) => anyhow::anyhow!(
                    "another session holds replication slot {name}: stop the order-service \
                     instances still running the previous mode or relay, then start again"
                ),
                Err(SessionError::Retry(error)) => error,
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(error.context(format!("draining replication slot {name}")));
            }
            tracing::warn!(slot = %name, error = format!("{error:#}"), "draining the slot: retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let mut conn = self.pool.acquire().await?;
        cdc_slots::mark_drained(&mut conn, &name).await?;
        slot::drop_slot(&self.pool, &name, deadline).await?;
        cdc_slots::forget(&mut conn, &name).await?;
        tracing::info!(slot = %name, "drained and dropped the replication slot left by a switch");
        Ok(())
    }
}

/// Drops a slot that was drained before (a crash came between the drain and
/// the drop), and forgets it.
pub async fn drop_drained(
    pool: &sqlx::PgPool,
    name: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    slot::drop_slot(pool, name, deadline).await?;
    cdc_slots::forget(&mut *pool.acquire().await?, name).await?;
    Ok(())
}
