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
//! With `--outbox-relay cdc` ([`cdc_relay`], in builds with the `cdc`
//! feature) the row is deleted in the same
//! transaction and the CDC reader publishes it from the WAL instead: lower
//! latency, no table to clean, the guarantees of the `cdc` mode.
//!
//! Switching the relay strands nothing ([`Outbox::leave`]): every start
//! first publishes the rows left in the table with the polling relay's step
//! ([`relay::Relay::drain`]), and switching back to polling drains the CDC
//! relay's slot before dropping it.

#[cfg(feature = "cdc")]
pub mod cdc_relay;
pub mod relay;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use shared_events::Envelope;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::{self, Stored};
use super::{Deps, Mode, Pattern, PatternArgs, PlaceError, Placed, Placement};
use super::{Started, Target, WritePath};
use crate::db::orders::{OrderWrite, OutboxRow};
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
    /// Tail the outbox's inserts through logical replication.
    #[cfg(feature = "cdc")]
    Cdc,
}

/// The slot's and the publication's label with the CDC relay:
/// `<prefix>_outbox`, `order_events_outbox`.
#[cfg(feature = "cdc")]
const LABEL: &str = "outbox";

pub struct Outbox;

impl Pattern for Outbox {
    fn mode(&self) -> Mode {
        Mode::Outbox
    }

    /// The outbox relayed by CDC writes under a name of its own: a switch
    /// between the two relays strands what the other one would have published.
    #[cfg_attr(not(feature = "cdc"), expect(unused_variables))]
    fn target<'a>(
        &'a self,
        deps: &'a Deps,
        args: &'a PatternArgs,
    ) -> BoxFuture<'a, anyhow::Result<Target>> {
        Box::pin(async move {
            Ok(match args.outbox.relay {
                RelayKind::Polling => Target::plain(Mode::Outbox),
                #[cfg(feature = "cdc")]
                RelayKind::Cdc => Target {
                    fence: "outbox-cdc",
                    slot: Some(cdc_relay_settings(deps, args).await?.slot),
                },
            })
        })
    }

    /// The write path and the relay. The CDC relay reads the replication
    /// settings too, which is why this takes all pattern settings.
    fn start<'a>(
        &'a self,
        deps: Deps,
        args: &'a PatternArgs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Started>> {
        Box::pin(async move {
            let fence = self.target(&deps, args).await?.fence;
            let (worker, wake_relay) = match args.outbox.relay {
                RelayKind::Polling => {
                    let relay = relay(&deps, &args.outbox);
                    let wake = relay.waker();
                    (relay.run(shutdown).map(Ok).boxed(), Some(wake))
                }
                #[cfg(feature = "cdc")]
                RelayKind::Cdc => (cdc_relay(deps.clone(), args, shutdown).await?, None),
            };
            let write = Writes {
                deps,
                fence,
                deletes_its_row: args.outbox.relay != RelayKind::Polling,
                wake_relay,
            };
            Ok(Started {
                write: Box::new(write),
                worker: Some(worker),
            })
        })
    }

    /// Publishes the rows left in the table with the polling relay's step
    /// (unless the polling relay is next: it will), and drains and drops
    /// the CDC relay's slot (unless `next` streams it).
    fn leave<'a>(
        &'a self,
        deps: &'a Deps,
        args: &'a PatternArgs,
        next: &'a Target,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if next.fence != Mode::Outbox.name() {
                let published = relay(deps, &args.outbox)
                    .drain(deps.startup_deadline)
                    .await?;
                if published > 0 {
                    tracing::info!(
                        rows = published,
                        "published the rows left in the outbox before serving"
                    );
                }
            }
            #[cfg(feature = "cdc")]
            args.replication
                .retire_left(
                    &deps.replication(),
                    LABEL,
                    next.slot.as_deref(),
                    cdc_relay::OutboxCapture::default,
                    deps.startup_deadline,
                )
                .await?;
            Ok(())
        })
    }
}

/// The polling relay.
fn relay(deps: &Deps, args: &Args) -> relay::Relay {
    relay::Relay::new(
        deps.pool.clone(),
        deps.publisher.clone(),
        args.batch_size,
        args.poll_interval,
    )
}

/// The CDC relay's replication settings.
#[cfg(feature = "cdc")]
async fn cdc_relay_settings(
    deps: &Deps,
    args: &PatternArgs,
) -> anyhow::Result<crate::replication::CdcSettings> {
    args.replication.settings(&deps.replication(), LABEL).await
}

/// Creates the outbox's publication and slot; the reader that relays it.
#[cfg(feature = "cdc")]
async fn cdc_relay(
    deps: Deps,
    args: &PatternArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<super::Worker> {
    let reader = crate::replication::Reader::prepare(
        deps.pool.clone(),
        deps.publisher.clone(),
        cdc_relay_settings(&deps, args).await?,
        cdc_relay::OutboxCapture::default(),
    )
    .await?;
    Ok(reader.run(shutdown).boxed())
}

struct Writes {
    deps: Deps,
    fence: &'static str,
    /// Whether the outbox row is deleted in the order's transaction (the
    /// CDC relay publishes its insert from the WAL).
    deletes_its_row: bool,
    /// The polling relay's wake-up, notified after each committed order.
    wake_relay: Option<Arc<Notify>>,
}

impl WritePath for Writes {
    fn place(&self, placement: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>> {
        Box::pin(self.write(placement))
    }
}

impl Writes {
    /// One statement writes the order, its lines and its outbox row. With
    /// the CDC relay the row is deleted again in the same transaction: its
    /// insert stays in the WAL, and the table stays empty.
    async fn write(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order = store::new_order(&placement);
        let mut event = Envelope::new(Uuid::now_v7(), order.created_at, order.placed_event());
        event.traceparent = service_kit::trace::current_traceparent();
        let payload = serde_json::to_value(&event).context("serializing OrderPlaced")?;
        let subject = self.deps.names.order_placed_subject();
        let write =
            OrderWrite::new(self.fence, &order, &placement.key).with_outbox_row(OutboxRow {
                event_id: event.event_id,
                subject: &subject,
                payload: &payload,
                traceparent: event.traceparent.as_deref(),
            });
        let stored = if self.deletes_its_row {
            let mut tx = self
                .deps
                .pool
                .begin()
                .await
                .context("beginning the order transaction")?;
            let stored = store::execute(&mut tx, write, &placement).await?;
            if matches!(stored, Stored::New) {
                sql::delete_event(&mut tx, event.event_id)
                    .await
                    .context("deleting the captured outbox row")?;
            }
            tx.commit().await.context("committing the order")?;
            stored
        } else {
            let mut conn = store::connection(&self.deps.pool).await?;
            store::execute(&mut conn, write, &placement).await?
        };
        if matches!(stored, Stored::New) {
            if let Some(wake) = &self.wake_relay {
                wake.notify_one();
            }
            crash_point("after_commit_before_publish");
        }
        Ok(stored.placed(order))
    }
}
