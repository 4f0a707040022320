//! `cdc` ("original event handling"): the `orders` table itself is the
//! source of events.
//!
//! Write path: the order (and its lines) in one transaction, nothing else.
//! Worker: the [CDC reader](crate::cdc::reader) streams the `orders` and
//! `order_lines` inserts of each committed transaction from a logical slot and
//! publishes one `OrderPlaced` per order, confirming the slot only after the
//! PubAcks.
//!
//! Guarantee: every committed order is published at least once, even if
//! order-service dies at any point: an unconfirmed transaction is streamed
//! again. Its event id derives from the order id, so a replay is the same
//! event — dropped by the broker's duplicate window, and for good by the
//! consumer's ledger. Failure modes: an idle slot retaining WAL (prevented by
//! heartbeats), a lost slot (the reader stops loudly), a changed table shape
//! (the reader stops loudly until the mapping is updated).

mod capture;

use anyhow::Context as _;

use super::store::{self, Begun};
use super::{Deps, PlaceError, Placed, Placement};
use crate::cdc::{CdcSettings, Reader};
use service_kit::crash::crash_point;

pub use capture::OrdersCapture;

pub struct Cdc {
    deps: Deps,
}

impl Cdc {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let (tx, order) = match store::begin(&self.deps.pool, placement).await? {
            Begun::Replayed(order) => return Ok(Placed::stored_before(order)),
            Begun::New(tx, order) => (tx, order),
        };
        tx.commit().await.context("committing the order")?;
        crash_point("after_commit_before_publish");
        Ok(Placed::stored(order))
    }

    /// Creates the publication and slot; the reader to run as the worker.
    pub async fn reader(&self, settings: CdcSettings) -> anyhow::Result<Reader<OrdersCapture>> {
        Reader::prepare(
            self.deps.pool.clone(),
            self.deps.jetstream.clone(),
            settings,
            OrdersCapture::new(self.deps.names.order_placed_subject()),
        )
        .await
    }
}
