//! `outbox`: the transactional outbox.
//!
//! Write path: the order and an outbox row holding its `OrderPlaced` are
//! inserted in ONE transaction, so either both exist or neither does.
//! Relay ([`relay`]): claims rows with `FOR UPDATE SKIP LOCKED`, publishes
//! them, awaits every PubAck, and only then deletes them.
//!
//! Guarantee: every committed order is published at least once. A crash
//! between PubAck and DELETE republishes the row with the same event id; the
//! broker's duplicate window, and for good the consumer's ledger, absorb it.
//! Failure modes: NATS down delays events (the rows wait); a relay crash
//! rolls its claim back and another relay, or the restarted one, retries.
//!
//! With `--outbox-relay cdc` ([`cdc_relay`]) the row is deleted in the same
//! transaction and the CDC reader publishes it from the WAL instead: lower
//! latency, no table to clean, the guarantees of the `cdc` mode.
//!
//! Switching the relay strands nothing: every start first publishes the rows
//! left in the table with the polling relay's step ([`relay::Relay::drain`]),
//! and switching back to polling drains the CDC relay's slot before dropping
//! it (see `patterns::switch`).

#[cfg(feature = "cdc")]
pub mod cdc_relay;
pub mod relay;

use anyhow::Context as _;
use shared_events::Envelope;
use uuid::Uuid;

use super::store::{self, Begun};
use super::{Deps, OutboxRelay, PlaceError, Placed, Placement, WorkerSettings};
use crate::db;
use service_kit::crash::crash_point;

pub struct Outbox {
    deps: Deps,
    settings: WorkerSettings,
}

impl Outbox {
    pub fn new(deps: Deps, settings: WorkerSettings) -> Self {
        Self { deps, settings }
    }

    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let (mut tx, order) = match store::begin(&self.deps.pool, placement).await? {
            Begun::Replayed(order) => return Ok(Placed::stored_before(order)),
            Begun::New(tx, order) => (tx, order),
        };
        let event = Envelope::new(Uuid::now_v7(), order.created_at, order.placed_event());
        let payload = serde_json::to_value(&event).context("serializing OrderPlaced")?;
        db::outbox::insert(
            &mut tx,
            event.event_id,
            &self.deps.names.order_placed_subject(),
            &payload,
        )
        .await
        .context("inserting the outbox row")?;
        if self.settings.outbox_relay == OutboxRelay::Cdc {
            // The WAL keeps the insert for the CDC relay; the table stays empty.
            db::outbox::delete_event(&mut tx, event.event_id)
                .await
                .context("deleting the captured outbox row")?;
        }
        tx.commit().await.context("committing the order")?;
        crash_point("after_commit_before_publish");
        Ok(Placed::stored(order))
    }

    /// Creates the outbox publication and slot; the CDC relay to run as the worker.
    #[cfg(feature = "cdc")]
    pub async fn cdc_relay(
        &self,
        settings: crate::cdc::CdcSettings,
    ) -> anyhow::Result<crate::cdc::Reader<cdc_relay::OutboxCapture>> {
        crate::cdc::Reader::prepare(
            self.deps.pool.clone(),
            self.deps.jetstream.clone(),
            settings,
            cdc_relay::OutboxCapture::default(),
        )
        .await
    }

    pub fn relay(&self) -> relay::Relay {
        relay::Relay::new(
            self.deps.pool.clone(),
            self.deps.jetstream.clone(),
            self.settings.relay_batch_size,
            self.settings.relay_poll_interval,
        )
    }
}
