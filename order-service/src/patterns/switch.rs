//! What a switch of mode or relay does before the new one serves its first
//! order, in every mode: nothing an earlier run left unpublished is stranded.
//!
//! 0. The new mode is recorded in the mode row (`db::mode`) first. Every
//!    write of an order checks that row in its own statement, so an
//!    instance of the old mode that is still running stores nothing from
//!    then on (it answers 503 `mode_switched`): what the steps below drain
//!    is all the old mode will ever have left.
//! 1. Every remembered replication slot the new configuration does not stream
//!    (leaving cdc mode, or leaving the CDC outbox relay) is retired: read to
//!    the current end of the WAL, published, confirmed, dropped, forgotten
//!    ([`crate::replication::retire`]). A remembered slot that is gone, or not
//!    as order-service left it, stops start-up with the resync command, as it
//!    does in cdc mode.
//! 2. Rows left in the outbox (by the polling relay, or by a crash) are
//!    published with the polling relay's step until the outbox is empty
//!    (except in outbox mode with the polling relay, whose relay does it).
//! 3. Leaving self-read, the projector's durable consumer is run until it has
//!    applied every event in the stream, then deleted: a 202 answered just
//!    before the switch still reaches the order history. (Coming back to
//!    self-read creates it again; it then reads the stream from the start,
//!    and finds the orders other modes wrote as duplicates.)
//!
//! All three happen before the listener serves, and are idempotent: a crash in the
//! middle is finished by the next start, and a replay carries the same event
//! ids. The instances of the previous mode should be stopped first. One that
//! still streams a slot the switch would retire makes start-up refuse before
//! anything changes; any other stores no more orders once step 0 is done.
//! The last instance to start sets the mode.

use anyhow::Context as _;

use super::{Deps, Mode, PatternArgs};
use crate::db::cdc_slots::{self, RememberedSlot};

/// Durable consumer name of the self-read projector (known to every mode:
/// leaving self-read drains it).
pub const PROJECTOR_DURABLE: &str = "order-history";

pub(super) async fn before_serving(
    mode: Mode,
    deps: &Deps,
    settings: &PatternArgs,
) -> anyhow::Result<()> {
    let streamed = streamed_slot(mode, deps, settings).await?;
    let mut conn = deps.pool.acquire().await?;
    // A slot this configuration would retire is streamed by a running
    // instance of the old mode: refuse before anything changes (the mode
    // row included), so that the old instance goes on serving.
    let held = cdc_slots::held(&mut conn).await?;
    if let Some(slot) = held.iter().find(|held| Some(*held) != streamed.as_ref()) {
        anyhow::bail!(
            "another session holds replication slot {slot}: stop the order-service instances \
             still running the previous mode or relay, then start again"
        );
    }
    let remembered = cdc_slots::all(&mut conn).await?;
    drop(conn);

    let fence = mode.fence_name(relays_by_polling(settings));
    if let Some(previous) = crate::db::mode::switch_to(&deps.pool, fence)
        .await
        .context("recording the mode")?
    {
        tracing::info!(
            from = previous,
            to = fence,
            "switched mode: instances still running in the old mode store no more orders"
        );
    }
    for slot in remembered {
        if Some(&slot.slot_name) != streamed.as_ref() {
            retire(deps, settings, slot).await?;
        }
    }
    if !(mode == Mode::Outbox && relays_by_polling(settings)) {
        drain_outbox(deps, settings).await?;
    }
    if mode != Mode::SelfRead {
        leave_self_read(deps, settings).await?;
    }
    Ok(())
}

/// Runs the self-read projector until it has nothing left, then deletes its
/// durable consumer; nothing to do if there is none.
async fn leave_self_read(deps: &Deps, settings: &PatternArgs) -> anyhow::Result<()> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::consumer::PullConsumer;
    use async_nats::jetstream::stream::ConsumerErrorKind;

    let stream = deps.names.stream();
    let consumer: Result<PullConsumer, _> = deps
        .jetstream
        .get_consumer_from_stream(PROJECTOR_DURABLE, stream)
        .await;
    let mut consumer = match consumer {
        Ok(consumer) => consumer,
        Err(error)
            if matches!(error.kind(), ConsumerErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            return Ok(());
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context("looking up the self-read projector"));
        }
    };
    if !caught_up(consumer.info().await?) {
        tracing::info!("applying what the self-read projector has left before switching");
        project_the_rest(deps, settings, &mut consumer).await?;
    }
    deps.jetstream
        .delete_consumer_from_stream(PROJECTOR_DURABLE, stream)
        .await
        .context("deleting the self-read projector's consumer")?;
    Ok(())
}

/// Whether a durable consumer has applied and acked everything.
pub(crate) fn caught_up(info: &async_nats::jetstream::consumer::Info) -> bool {
    info.num_pending == 0 && info.num_ack_pending == 0
}

#[cfg(feature = "self-read")]
async fn project_the_rest(
    deps: &Deps,
    settings: &PatternArgs,
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
) -> anyhow::Result<()> {
    super::self_read::projector::catch_up(deps, &settings.self_read, consumer).await
}

#[cfg(not(feature = "self-read"))]
async fn project_the_rest(
    _: &Deps,
    _: &PatternArgs,
    _: &mut async_nats::jetstream::consumer::PullConsumer,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "the self-read projector has events left to apply and this build has no self-read \
         feature: start a build with it once, in any mode other than self-read"
    )
}

/// Whether the outbox is relayed by polling (else by CDC).
#[cfg(feature = "outbox")]
fn relays_by_polling(settings: &PatternArgs) -> bool {
    settings.outbox.relay == super::outbox::RelayKind::Polling
}

#[cfg(not(feature = "outbox"))]
fn relays_by_polling(_: &PatternArgs) -> bool {
    false
}

/// The slot the configured mode streams, if any.
#[cfg(feature = "cdc")]
async fn streamed_slot(
    mode: Mode,
    deps: &Deps,
    settings: &PatternArgs,
) -> anyhow::Result<Option<String>> {
    let label = match mode {
        Mode::Cdc => "orders",
        Mode::Outbox if !relays_by_polling(settings) => "outbox",
        _ => return Ok(None),
    };
    Ok(Some(settings.replication.settings(deps, label).await?.slot))
}

#[cfg(not(feature = "cdc"))]
async fn streamed_slot(_: Mode, _: &Deps, _: &PatternArgs) -> anyhow::Result<Option<String>> {
    Ok(None)
}

#[cfg(feature = "cdc")]
async fn retire(deps: &Deps, settings: &PatternArgs, slot: RememberedSlot) -> anyhow::Result<()> {
    use crate::replication::{CdcSettings, Reader, retire};

    let deadline = deps.startup_deadline;
    if slot.drained_at.is_some() {
        return retire::drop_drained(&deps.pool, &slot.slot_name, deadline).await;
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
        slot: slot.slot_name,
        publication: slot.publication,
        ..settings.replication.settings(deps, label).await?
    };
    let (pool, publisher) = (deps.pool.clone(), deps.publisher.clone());
    if label == "orders" {
        let capture = super::cdc::OrdersCapture::new(deps.names.order_placed_subject());
        return Reader::new(pool, publisher, cdc, capture)
            .retire(deadline)
            .await;
    }
    retire_outbox_slot(pool, publisher, cdc, deadline).await
}

#[cfg(all(feature = "cdc", feature = "outbox"))]
async fn retire_outbox_slot(
    pool: sqlx::PgPool,
    publisher: shared_events::jetstream::Publisher,
    cdc: crate::replication::CdcSettings,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let capture = super::outbox::cdc_relay::OutboxCapture::default();
    crate::replication::Reader::new(pool, publisher, cdc, capture)
        .retire(deadline)
        .await
}

#[cfg(all(feature = "cdc", not(feature = "outbox")))]
async fn retire_outbox_slot(
    _: sqlx::PgPool,
    _: shared_events::jetstream::Publisher,
    cdc: crate::replication::CdcSettings,
    _: tokio::time::Instant,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "replication slot {} holds outbox events and this build has no outbox feature: \
         start a build with it once, in any mode",
        cdc.slot
    )
}

#[cfg(not(feature = "cdc"))]
async fn retire(_: &Deps, _: &PatternArgs, slot: RememberedSlot) -> anyhow::Result<()> {
    anyhow::bail!(
        "replication slot {} (the {} capture) must be drained before switching, and this \
         build has no cdc feature: start a build with it once in any other mode",
        slot.slot_name,
        slot.label
    )
}

#[cfg(feature = "outbox")]
async fn drain_outbox(deps: &Deps, settings: &PatternArgs) -> anyhow::Result<()> {
    let relay = super::outbox::relay(deps, &settings.outbox);
    let published = relay.drain(deps.startup_deadline).await?;
    if published > 0 {
        tracing::info!(
            rows = published,
            "published the rows left in the outbox before serving"
        );
    }
    Ok(())
}

#[cfg(not(feature = "outbox"))]
async fn drain_outbox(deps: &Deps, _: &PatternArgs) -> anyhow::Result<()> {
    let waiting = crate::db::leftovers::outbox_rows(&mut *deps.pool.acquire().await?).await?;
    anyhow::ensure!(
        waiting == 0,
        "{waiting} outbox row(s) are waiting to be published and this build has no outbox \
         relay: start a build with the outbox feature once, in any mode"
    );
    Ok(())
}
