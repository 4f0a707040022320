//! `cdc` ("original event handling"): the `orders` table itself is the
//! source of events.
//!
//! Write path: the order (and its lines) in one transaction, nothing else.
//! Worker: the [CDC reader](crate::replication::reader) streams the `orders` and
//! `order_lines` inserts of each committed transaction from a logical slot and
//! publishes one `OrderPlaced` per order, confirming the slot only after the
//! PubAcks.
//!
//! Guarantee: every committed order is published at least once, even if
//! order-service dies at any point: an unconfirmed transaction is streamed
//! again. Its event id derives from the order id, so a replay is the same
//! event — dropped by the broker's duplicate window, and for good by the
//! consumer's ledger. Failure modes: an idle slot retaining WAL (prevented by
//! heartbeats); a slot that vanished or was lost (a failover, a restore, a
//! manual drop, `max_slot_wal_keep_size`): the slot is remembered in the
//! database, so start-up refuses instead of silently making a new one that
//! skips unconfirmed orders, and names `order-events cdc resync`; a publication
//! without `order_lines` (repaired at start-up); rows that form no event (lines
//! without their order: dead-lettered and counted); a changed table shape (the
//! reader stops loudly until the mapping is updated). Leaving cdc mode drains
//! the slot before dropping it (see `patterns::switch`).

mod capture;

use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;

use super::store::{self, Stored};
use super::{Deps, Mode, Outcome, PlaceError, Placed, Placement, Worker};
use crate::replication::{self, Reader};

pub use capture::OrdersCapture;

/// Checks (or creates) the publication and the slot before the first order
/// — a slot sees only what comes after it — and returns the write path and
/// the reader that streams the slot.
pub async fn start(
    deps: Deps,
    args: &replication::Args,
    shutdown: CancellationToken,
) -> anyhow::Result<(Cdc, Option<Worker>)> {
    let reader = Reader::prepare(
        deps.pool.clone(),
        deps.publisher.clone(),
        args.settings(&deps, "orders").await?,
        OrdersCapture::new(deps.names.order_placed_subject()),
    )
    .await?;
    Ok((Cdc { deps }, Some(reader.run(shutdown).boxed())))
}

pub struct Cdc {
    deps: Deps,
}

impl Cdc {
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        // The WAL of this transaction is the event: nothing else to write
        // but the trace context, as a message beside the rows.
        let traceparent = service_kit::trace::current_traceparent();
        Ok(
            match store::commit(
                &self.deps.pool,
                Mode::Cdc.name(),
                placement,
                traceparent.as_deref(),
            )
            .await?
            {
                Stored::New(order) => Placed::stored(order, Outcome::New),
                Stored::Replayed(order) => Placed::stored(order, Outcome::Replayed),
            },
        )
    }
}
