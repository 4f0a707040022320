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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use shared_events::Envelope;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::{self, Stored};
use super::{Deps, Mode, Outcome, PatternArgs, PlaceError, Placed, Placement, Worker};
use crate::db;
use crate::db::orders::OutboxRow;
use service_kit::crash::crash_point;
use service_kit::duration;

/// The outbox's settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "outbox")]
#[command(next_help_heading = "Outbox")]
pub struct Args {
    /// How the outbox is relayed: `polling` (FOR UPDATE SKIP LOCKED, woken by
    /// this process's commits) or `cdc` (logical replication of the outbox's
    /// inserts).
    #[arg(long = "outbox-relay", env = "OUTBOX_RELAY", value_enum, default_value_t = RelayKind::Polling)]
    pub relay: RelayKind,
    /// Most outbox rows one relay step publishes.
    #[arg(
        long = "relay-batch-size",
        env = "RELAY_BATCH_SIZE",
        default_value_t = 200
    )]
    pub batch_size: i64,
    /// How often the relay looks at the outbox when no commit of this
    /// process woke it: the longest a row written by another instance that
    /// died before relaying it waits.
    #[arg(long = "relay-poll-interval", env = "RELAY_POLL_INTERVAL", default_value = "1s", value_parser = duration::parse)]
    pub poll_interval: Duration,
}

/// How the outbox is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayKind {
    /// Claim rows with `FOR UPDATE SKIP LOCKED`, woken by this process's commits.
    Polling,
    /// Tail the outbox's inserts through logical replication (needs the `cdc` feature).
    Cdc,
}

/// The outbox write path and its relay. The CDC relay reads the replication
/// settings too, which is why this takes all pattern settings.
pub async fn start(
    deps: Deps,
    args: &PatternArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<(Outbox, Option<Worker>)> {
    let (worker, wake_relay) = match args.outbox.relay {
        RelayKind::Polling => {
            let relay = relay(&deps, &args.outbox);
            let wake = relay.waker();
            (relay.run(shutdown).map(Ok).boxed(), Some(wake))
        }
        RelayKind::Cdc => (cdc_relay(deps.clone(), args, shutdown).await?, None),
    };
    let outbox = Outbox {
        deps,
        relay_kind: args.outbox.relay,
        wake_relay,
    };
    Ok((outbox, Some(worker)))
}

/// The polling relay.
pub fn relay(deps: &Deps, args: &Args) -> relay::Relay {
    relay::Relay::new(
        deps.pool.clone(),
        deps.publisher.clone(),
        args.batch_size,
        args.poll_interval,
    )
}

/// Creates the outbox's publication and slot; the reader that relays it.
#[cfg(feature = "cdc")]
async fn cdc_relay(
    deps: Deps,
    args: &PatternArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Worker> {
    let settings = args.replication.settings(&deps, "outbox").await?;
    let reader = crate::replication::Reader::prepare(
        deps.pool.clone(),
        deps.publisher.clone(),
        settings,
        cdc_relay::OutboxCapture::default(),
    )
    .await?;
    Ok(reader.run(shutdown).boxed())
}

#[cfg(not(feature = "cdc"))]
async fn cdc_relay(_: Deps, _: &PatternArgs, _: CancellationToken) -> anyhow::Result<Worker> {
    anyhow::bail!("OUTBOX_RELAY=cdc needs a build with the cdc feature")
}

pub struct Outbox {
    deps: Deps,
    relay_kind: RelayKind,
    /// The polling relay's wake-up, notified after each committed order.
    wake_relay: Option<Arc<Notify>>,
}

impl Outbox {
    /// One statement writes the order, its lines, its key and its outbox
    /// row. With the CDC relay the row is deleted again in the same
    /// transaction: its insert stays in the WAL, and the table stays empty.
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order = store::new_order(&placement);
        let fence = Mode::Outbox.fence_name(self.relay_kind == RelayKind::Polling);
        let mut event = Envelope::new(Uuid::now_v7(), order.created_at, order.placed_event());
        event.traceparent = service_kit::trace::current_traceparent();
        let payload = serde_json::to_value(&event).context("serializing OrderPlaced")?;
        let subject = self.deps.names.order_placed_subject();
        let row = OutboxRow {
            event_id: event.event_id,
            subject: &subject,
            payload: &payload,
            traceparent: event.traceparent.as_deref(),
        };
        let stored = if self.relay_kind == RelayKind::Cdc {
            let mut tx = self
                .deps
                .pool
                .begin()
                .await
                .context("beginning the order transaction")?;
            let stored = store::insert(&mut tx, fence, &placement, order, Some(row), None).await?;
            if matches!(stored, Stored::New(_)) {
                db::outbox::delete_event(&mut tx, event.event_id)
                    .await
                    .context("deleting the captured outbox row")?;
            }
            tx.commit().await.context("committing the order")?;
            stored
        } else {
            let mut conn = self
                .deps
                .pool
                .acquire()
                .await
                .context("acquiring a database connection")?;
            store::insert(&mut conn, fence, &placement, order, Some(row), None).await?
        };
        Ok(match stored {
            Stored::New(order) => {
                if let Some(wake) = &self.wake_relay {
                    wake.notify_one();
                }
                crash_point("after_commit_before_publish");
                Placed::stored(order, Outcome::New)
            }
            Stored::Replayed(order) => Placed::stored(order, Outcome::Replayed),
        })
    }
}
