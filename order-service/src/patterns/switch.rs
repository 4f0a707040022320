//! What a switch of mode or relay does before the new one serves its first
//! order, in every mode: nothing an earlier run left unpublished is stranded.
//!
//! 1. Every remembered replication slot the new configuration does not stream
//!    (leaving cdc mode, or leaving the CDC outbox relay) is retired: read to
//!    the current end of the WAL, published, confirmed, dropped, forgotten
//!    ([`crate::cdc::retire`]). A remembered slot that is gone stops start-up
//!    with the resync command, as it does in cdc mode.
//! 2. Rows left in the outbox (by the polling relay, or by a crash) are
//!    published with the polling relay's step until the outbox is empty.
//!
//! Both happen before the listener serves, and are idempotent: a crash in the
//! middle is finished by the next start, and a replay carries the same event
//! ids. A switch assumes the instances of the previous mode were stopped
//! first; a slot still held by one makes start-up wait, then fail.

use super::{Deps, Mode, WorkerSettings};
use crate::db::cdc_slots::{self, RememberedSlot};

pub(super) async fn before_serving(
    mode: Mode,
    deps: &Deps,
    settings: &WorkerSettings,
) -> anyhow::Result<()> {
    let streamed = streamed_slot(mode, deps, settings).await?;
    let remembered = cdc_slots::all(&mut *deps.pool.acquire().await?).await?;
    for slot in remembered {
        if Some(&slot.slot_name) != streamed.as_ref() {
            retire(deps, settings, slot).await?;
        }
    }
    drain_outbox(deps, settings).await
}

/// The slot the configured mode streams, if any.
#[cfg(feature = "cdc")]
async fn streamed_slot(
    mode: Mode,
    deps: &Deps,
    settings: &WorkerSettings,
) -> anyhow::Result<Option<String>> {
    let suffix = match (mode, settings.outbox_relay) {
        (Mode::Cdc, _) => "orders",
        (Mode::Outbox, super::OutboxRelay::Cdc) => "outbox",
        _ => return Ok(None),
    };
    Ok(Some(
        super::cdc_settings(deps, settings, suffix).await?.slot,
    ))
}

#[cfg(not(feature = "cdc"))]
async fn streamed_slot(
    _mode: Mode,
    _deps: &Deps,
    _settings: &WorkerSettings,
) -> anyhow::Result<Option<String>> {
    Ok(None)
}

#[cfg(feature = "cdc")]
async fn retire(
    deps: &Deps,
    settings: &WorkerSettings,
    slot: RememberedSlot,
) -> anyhow::Result<()> {
    use crate::cdc::{CdcSettings, Reader, retire, slot::resync_needed};

    let deadline = settings.startup_deadline;
    if slot.drained_at.is_some() {
        return retire::drop_drained(&deps.pool, &slot.slot_name, deadline).await;
    }
    if !slot.same_system {
        return Err(resync_needed(
            &slot.slot_name,
            "was created on another PostgreSQL server (a restore or a new cluster)",
        ));
    }
    tracing::info!(slot = %slot.slot_name, "draining the replication slot a switch left behind");
    let label = match slot.label.as_str() {
        "orders" => "orders",
        "outbox" => "outbox",
        other => anyhow::bail!(
            "replication slot {} has unknown label {other:?}",
            slot.slot_name
        ),
    };
    let cdc = CdcSettings {
        database_url: settings.database_url.clone(),
        slot: slot.slot_name,
        publication: slot.publication,
        heartbeat_interval: settings.cdc_heartbeat_interval,
        max_in_flight: settings.cdc_max_in_flight,
        crash_point: "cdc_before_confirm",
        label,
        names: deps.names.clone(),
    };
    let (pool, jetstream) = (deps.pool.clone(), deps.jetstream.clone());
    if label == "orders" {
        let capture = super::cdc::OrdersCapture::new(deps.names.order_placed_subject());
        return Reader::new(pool, jetstream, cdc, capture)
            .retire(deadline)
            .await;
    }
    retire_outbox_slot(pool, jetstream, cdc, deadline).await
}

#[cfg(all(feature = "cdc", feature = "outbox"))]
async fn retire_outbox_slot(
    pool: sqlx::PgPool,
    jetstream: async_nats::jetstream::Context,
    cdc: crate::cdc::CdcSettings,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let capture = super::outbox::cdc_relay::OutboxCapture::default();
    crate::cdc::Reader::new(pool, jetstream, cdc, capture)
        .retire(deadline)
        .await
}

#[cfg(all(feature = "cdc", not(feature = "outbox")))]
async fn retire_outbox_slot(
    _: sqlx::PgPool,
    _: async_nats::jetstream::Context,
    cdc: crate::cdc::CdcSettings,
    _: tokio::time::Instant,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "replication slot {} holds outbox events and this build has no outbox feature: \
         start a build with it once, in any mode",
        cdc.slot
    )
}

#[cfg(not(feature = "cdc"))]
async fn retire(_: &Deps, _: &WorkerSettings, slot: RememberedSlot) -> anyhow::Result<()> {
    anyhow::bail!(
        "replication slot {} (the {} capture) must be drained before switching, and this \
         build has no cdc feature: start a build with it once in any other mode",
        slot.slot_name,
        slot.label
    )
}

#[cfg(feature = "outbox")]
async fn drain_outbox(deps: &Deps, settings: &WorkerSettings) -> anyhow::Result<()> {
    let relay = super::outbox::relay::Relay::new(
        deps.pool.clone(),
        deps.jetstream.clone(),
        settings.relay_batch_size,
        settings.relay_poll_interval,
    );
    let published = relay.drain(settings.startup_deadline).await?;
    if published > 0 {
        tracing::info!(
            rows = published,
            "published the rows left in the outbox before serving"
        );
    }
    Ok(())
}

#[cfg(not(feature = "outbox"))]
async fn drain_outbox(deps: &Deps, _: &WorkerSettings) -> anyhow::Result<()> {
    let waiting = crate::db::leftovers::outbox_rows(&mut *deps.pool.acquire().await?).await?;
    anyhow::ensure!(
        waiting == 0,
        "{waiting} outbox row(s) are waiting to be published and this build has no outbox \
         relay: start a build with the outbox feature once, in any mode"
    );
    Ok(())
}
