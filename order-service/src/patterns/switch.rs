//! What a switch of mode or relay does before the new one serves its first
//! order, in every start: nothing an earlier run left unpublished is stranded.
//!
//! 1. A replication slot that the new configuration does not stream but
//!    another session holds is streamed by a running instance of the old
//!    mode: start-up is refused before anything changes, so that the old
//!    instance goes on serving. The instances of the previous mode should
//!    be stopped first.
//! 2. The new mode is recorded in the mode row (`db::mode`). Every write of
//!    an order checks that row in its own statement, so an instance of the
//!    old mode that is still running stores nothing from then on (it
//!    answers 503 `mode_switched`): what the steps below publish is all the
//!    old mode will ever have left.
//! 3. Every pattern of this build publishes what it may have left behind
//!    and the new configuration will not ([`Pattern::leave`]): the outbox
//!    its rows and its CDC relay's slot, cdc its slot, self-read what its
//!    projector has not applied.
//! 4. What is still left belongs to a pattern this build lacks: start-up is
//!    refused, naming the build that can publish it. Only a self-read
//!    projector that has applied everything is simply removed.
//!
//! All of it happens before the listener serves, and is idempotent: a crash
//! in the middle is finished by the next start, and a replay carries the
//! same event ids. The last instance to start sets the mode.

use anyhow::Context as _;

use super::{Deps, Mode, Pattern, PatternArgs, Target};
use crate::db;
use crate::db::cdc_slots;

pub(super) async fn before_serving(
    next: &Target,
    compiled: &[&dyn Pattern],
    deps: &Deps,
    args: &PatternArgs,
) -> anyhow::Result<()> {
    let held = cdc_slots::held(&mut *deps.pool.acquire().await?).await?;
    if let Some(slot) = held.iter().find(|held| Some(*held) != next.slot.as_ref()) {
        anyhow::bail!(
            "another session holds replication slot {slot}: stop the order-service instances \
             still running the previous mode or relay, then start again"
        );
    }
    if let Some(previous) = db::mode::switch_to(&deps.pool, next.fence)
        .await
        .context("recording the mode")?
    {
        tracing::info!(
            from = previous,
            to = next.fence,
            "switched mode: instances still running in the old mode store no more orders"
        );
    }
    for pattern in compiled {
        pattern.leave(deps, args, next).await?;
    }
    nothing_left(next, deps).await
}

/// Refuses to serve while something a pattern left is unpublished, which
/// only a build with that pattern can publish; removes the self-read
/// projector's consumer when it has applied everything.
async fn nothing_left(next: &Target, deps: &Deps) -> anyhow::Result<()> {
    let mut conn = deps.pool.acquire().await?;
    for slot in cdc_slots::all(&mut conn).await? {
        anyhow::ensure!(
            Some(&slot.slot_name) == next.slot.as_ref(),
            "replication slot {} (the {} capture) must be drained before switching, and this \
             build cannot: start a build with the features cdc{} once, in any mode",
            slot.slot_name,
            slot.label,
            if slot.label == "outbox" {
                " and outbox"
            } else {
                ""
            },
        );
    }
    if next.fence != Mode::Outbox.name() {
        let waiting = db::backlog::outbox(&mut conn).await?.rows;
        anyhow::ensure!(
            waiting == 0,
            "{waiting} outbox row(s) are waiting to be published and this build has no outbox \
             relay: start a build with the outbox feature once, in any mode"
        );
    }
    if next.fence == Mode::SelfRead.name() {
        return Ok(());
    }
    let (stream, durable) = (deps.names.stream(), deps.names.projector_consumer());
    let Some(mut projector) =
        service_kit::consumer::find_durable(&deps.jetstream, stream, durable).await?
    else {
        return Ok(());
    };
    anyhow::ensure!(
        service_kit::consumer::caught_up(projector.info().await?),
        "the self-read projector has events left to apply (a self-read instance is still \
         running, or this build has no self-read feature): stop the self-read instances and \
         start a build with the feature once, in any mode other than self-read"
    );
    deps.jetstream
        .delete_consumer_from_stream(durable, stream)
        .await
        .context("deleting the self-read projector's consumer")?;
    Ok(())
}
