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
//! the slot before dropping it ([`Cdc::leave`]).

mod capture;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::store::{self, Stored};
use super::{Deps, Mode, Pattern, PatternArgs, PlaceError, Placed, Placement};
use super::{Started, Target, WritePath};
use crate::db::orders::OrderWrite;
use crate::replication::{Reader, TRACE_MESSAGE_PREFIX};

pub use capture::OrdersCapture;

/// The slot's and the publication's label: `<prefix>_orders`, `order_events_orders`.
const LABEL: &str = "orders";

pub struct Cdc;

impl Pattern for Cdc {
    fn mode(&self) -> Mode {
        Mode::Cdc
    }

    fn target<'a>(
        &'a self,
        deps: &'a Deps,
        args: &'a PatternArgs,
    ) -> BoxFuture<'a, anyhow::Result<Target>> {
        Box::pin(async move {
            let settings = args
                .replication
                .settings(&deps.replication(), LABEL)
                .await?;
            Ok(Target {
                slot: Some(settings.slot),
                ..Target::plain(Mode::Cdc)
            })
        })
    }

    /// Checks (or creates) the publication and the slot before the first
    /// order — a slot sees only what comes after it — and returns the write
    /// path and the reader that streams the slot.
    fn start<'a>(
        &'a self,
        deps: Deps,
        args: &'a PatternArgs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Started>> {
        Box::pin(async move {
            let reader = Reader::prepare(
                deps.pool.clone(),
                deps.publisher.clone(),
                args.replication
                    .settings(&deps.replication(), LABEL)
                    .await?,
                OrdersCapture::new(deps.names.order_placed_subject()),
            )
            .await?;
            Ok(Started {
                write: Box::new(Writes { deps }),
                worker: Some(reader.run(shutdown).boxed()),
            })
        })
    }

    /// Drains the orders' slot (what it has not confirmed is published),
    /// then drops it, unless `next` streams it.
    fn leave<'a>(
        &'a self,
        deps: &'a Deps,
        args: &'a PatternArgs,
        next: &'a Target,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let subject = deps.names.order_placed_subject();
        Box::pin(async move {
            let capture = || OrdersCapture::new(subject.clone());
            let (slot, deadline) = (next.slot.as_deref(), deps.startup_deadline);
            let replication = deps.replication();
            args.replication
                .retire_left(&replication, LABEL, slot, capture, deadline)
                .await
        })
    }
}

struct Writes {
    deps: Deps,
}

impl WritePath for Writes {
    fn place(&self, placement: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>> {
        Box::pin(self.commit(placement))
    }
}

impl Writes {
    /// The WAL of this transaction is the event: nothing else to write but
    /// the trace context, as a message beside the rows.
    async fn commit(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order = store::new_order(&placement);
        let traceparent = service_kit::trace::current_traceparent();
        let write = OrderWrite::new(Mode::Cdc.name(), &order, &placement.key)
            .with_wal_message(TRACE_MESSAGE_PREFIX, traceparent.as_deref());
        let mut conn = store::connection(&self.deps.pool).await?;
        let stored = store::execute(&mut conn, write, &placement).await?;
        if matches!(stored, Stored::New) {
            service_kit::crash::crash_point("after_commit_before_publish");
        }
        Ok(stored.placed(order))
    }
}
