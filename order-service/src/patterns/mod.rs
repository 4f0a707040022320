//! The patterns that turn a placed order into exactly one `OrderPlaced`.
//!
//! Each pattern is one module holding its write path and its background
//! worker; this file is the only place that matches on the [`Mode`].
//!
//! | mode | write path | what publishes |
//! |---|---|---|
//! | `outbox` | order + outbox row in one transaction | the relay (polling, or CDC on the outbox), after COMMIT |
//! | `cdc` | order, nothing else | the CDC reader, from the WAL of `orders` |
//! | `self-read` | publish, await the PubAck, answer 202 | the request itself; the projector writes the order from its own event |
//! | `dual-write` | order, COMMIT, then publish | the request itself; a crash in between loses the event |
//!
//! Whatever the mode, [`switch`] first publishes what an earlier mode or relay
//! left behind (outbox rows, a slot's unconfirmed changes) before serving.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clap::ValueEnum;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::{IdempotencyKey, NewOrder, Order};

#[cfg(not(any(
    feature = "outbox",
    feature = "cdc",
    feature = "self-read",
    feature = "dual-write"
)))]
compile_error!(
    "order-service needs at least one pattern feature: outbox, cdc, self-read or dual-write"
);

#[cfg(feature = "cdc")]
pub mod cdc;
#[cfg(feature = "dual-write")]
pub mod dual_write;
#[cfg(feature = "outbox")]
pub mod outbox;
#[cfg(feature = "self-read")]
pub mod self_read;
#[cfg(any(feature = "outbox", feature = "cdc", feature = "dual-write"))]
mod store;
// (cdc-safety) Publishes what an earlier mode or relay left behind.
mod switch;

/// Durable consumer name of the self-read projector (known to every mode:
/// leaving self-read drains it).
pub const PROJECTOR_DURABLE: &str = "order-history";

/// How order-service turns an order into an event; chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Transactional outbox with a relay.
    Outbox,
    /// Change data capture on the orders table.
    Cdc,
    /// Publish first, then project the own event.
    SelfRead,
    /// Commit, then publish: the control that loses events.
    DualWrite,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Outbox => "outbox",
            Mode::Cdc => "cdc",
            Mode::SelfRead => "self-read",
            Mode::DualWrite => "dual-write",
        }
    }
}

/// How the outbox is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutboxRelay {
    /// Claim rows with `FOR UPDATE SKIP LOCKED`, woken by LISTEN/NOTIFY.
    Polling,
    /// Tail the outbox's inserts through logical replication (needs the `cdc` feature).
    Cdc,
}

/// What every pattern needs from the outside world.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub names: shared_events::Names,
}

/// Tuning of the write paths and background workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub outbox_relay: OutboxRelay,
    pub relay_batch_size: i64,
    pub relay_poll_interval: Duration,
    /// Self-read: how long a request waits for its PubAck before re-sending.
    pub publish_timeout: Duration,
    /// Self-read: the projector's ack wait.
    pub consumer_ack_wait: Duration,
    /// Self-read: the projector's deliveries of a failing event.
    pub consumer_max_deliver: i64,
    /// CDC: where to stream from, and the slot (default: derived from the database name).
    pub database_url: String,
    pub cdc_slot: Option<String>,
    pub cdc_heartbeat_interval: Duration,
    pub cdc_max_in_flight: usize,
    /// (cdc-safety) When start-up gives up, draining what a switch left included.
    pub startup_deadline: tokio::time::Instant,
}

/// An order to place, with the client's idempotency key if it sent one.
pub struct Placement {
    pub order: NewOrder,
    pub key: Option<IdempotencyKey>,
}

/// A placed order. `replayed` is true when the idempotency key had already
/// placed it and nothing new happened.
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
    pub durability: Durability,
}

impl Placed {
    /// Committed to the order database now.
    pub fn stored(order: Order) -> Self {
        Self {
            order,
            replayed: false,
            durability: Durability::Stored,
        }
    }

    /// Committed before, under the same idempotency key; nothing new happened.
    pub fn stored_before(order: Order) -> Self {
        Self {
            order,
            replayed: true,
            durability: Durability::Stored,
        }
    }
}

/// How far an order got before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed to the order database (201 Created).
    Stored,
    /// Acknowledged by the broker; the order database follows (202 Accepted).
    Accepted,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the idempotency key was already used for a different order")]
    KeyReused,
    /// Certain that nothing was stored: nothing was sent.
    #[error("the event broker is unavailable")]
    Unavailable,
    /// Sent, but whether the broker stored it is not known: a retry with the
    /// same key resolves it to the original outcome.
    #[error("the outcome is unknown")]
    Unknown { key: IdempotencyKey },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The mode (or relay) was not compiled into this binary.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not available in this build of order-service (compiled in: {1})")]
pub struct UnavailableMode(String, String);

/// A pattern's background worker, prepared and ready to start: it runs until
/// the token is cancelled, and returns an error only when going on is unsafe.
pub type Worker = Box<
    dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
        + Send,
>;

#[cfg(any(feature = "outbox", feature = "cdc", feature = "self-read"))]
fn worker<F>(run: impl FnOnce(CancellationToken) -> F + Send + 'static) -> Option<Worker>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Some(Box::new(move |shutdown| Box::pin(run(shutdown))))
}

/// The active pattern's write path.
pub enum Pattern {
    #[cfg(feature = "outbox")]
    Outbox(outbox::Outbox),
    #[cfg(feature = "cdc")]
    Cdc(cdc::Cdc),
    #[cfg(feature = "self-read")]
    SelfRead(self_read::SelfRead),
    #[cfg(feature = "dual-write")]
    DualWrite(dual_write::DualWrite),
}

impl Pattern {
    /// Builds the pattern and its worker, and does what must precede the
    /// first order: publishing what an earlier mode or relay left behind
    /// (see [`switch`]), and for CDC checking the publication and the slot.
    pub async fn new(
        mode: Mode,
        deps: Deps,
        settings: WorkerSettings,
    ) -> anyhow::Result<(Self, Option<Worker>)> {
        switch::before_serving(mode, &deps, &settings).await?;
        match mode {
            #[cfg(feature = "outbox")]
            Mode::Outbox => {
                let pattern = outbox::Outbox::new(deps.clone(), settings.clone());
                let worker = match settings.outbox_relay {
                    OutboxRelay::Polling => {
                        let relay = pattern.relay();
                        worker(move |shutdown| async move {
                            relay.run(shutdown).await;
                            Ok(())
                        })
                    }
                    #[cfg(feature = "cdc")]
                    OutboxRelay::Cdc => {
                        let cdc = cdc_settings(&deps, &settings, "outbox").await?;
                        let reader = pattern.cdc_relay(cdc).await?;
                        worker(move |shutdown| reader.run(shutdown))
                    }
                    #[cfg(not(feature = "cdc"))]
                    OutboxRelay::Cdc => return Err(unavailable("the CDC outbox relay").into()),
                };
                Ok((Pattern::Outbox(pattern), worker))
            }
            #[cfg(feature = "cdc")]
            Mode::Cdc => {
                let pattern = cdc::Cdc::new(deps.clone());
                let reader = pattern
                    .reader(cdc_settings(&deps, &settings, "orders").await?)
                    .await?;
                Ok((
                    Pattern::Cdc(pattern),
                    worker(move |shutdown| reader.run(shutdown)),
                ))
            }
            #[cfg(feature = "self-read")]
            Mode::SelfRead => {
                let pattern = self_read::SelfRead::new(deps, settings);
                let projector = pattern.projector();
                Ok((
                    Pattern::SelfRead(pattern),
                    worker(move |shutdown| async move {
                        projector.run(shutdown).await;
                        Ok(())
                    }),
                ))
            }
            #[cfg(feature = "dual-write")]
            Mode::DualWrite => Ok((Pattern::DualWrite(dual_write::DualWrite::new(deps)), None)),
            #[allow(unreachable_patterns)]
            other => Err(unavailable(&format!("mode {}", other.name())).into()),
        }
    }

    /// Stores (and, depending on the mode, announces) an order.
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        match self {
            #[cfg(feature = "outbox")]
            Pattern::Outbox(p) => p.place(placement).await,
            #[cfg(feature = "cdc")]
            Pattern::Cdc(p) => p.place(placement).await,
            #[cfg(feature = "self-read")]
            Pattern::SelfRead(p) => p.place(placement).await,
            #[cfg(feature = "dual-write")]
            Pattern::DualWrite(p) => p.place(placement).await,
        }
    }
}

/// The CDC reader's settings for the slot `<database>_<suffix>` (or the
/// configured one) and the publication `order_events_<suffix>`.
#[cfg(feature = "cdc")]
async fn cdc_settings(
    deps: &Deps,
    settings: &WorkerSettings,
    suffix: &'static str,
) -> anyhow::Result<crate::cdc::CdcSettings> {
    let slot = match &settings.cdc_slot {
        Some(slot) => format!("{slot}_{suffix}"),
        None => crate::cdc::slot::default_name(&deps.pool, suffix).await?,
    };
    anyhow::ensure!(
        crate::cdc::slot::valid_identifier(&slot),
        "slot name {slot:?}: use lower-case letters, digits and '_'"
    );
    Ok(crate::cdc::CdcSettings {
        database_url: settings.database_url.clone(),
        slot,
        publication: format!("order_events_{suffix}"),
        heartbeat_interval: settings.cdc_heartbeat_interval,
        max_in_flight: settings.cdc_max_in_flight,
        crash_point: "cdc_before_confirm",
        label: suffix,
        names: deps.names.clone(),
    })
}

fn unavailable(what: &str) -> UnavailableMode {
    UnavailableMode(what.to_owned(), compiled_modes().join(", "))
}

/// The modes this binary was built with.
pub fn compiled_modes() -> Vec<&'static str> {
    [
        (cfg!(feature = "outbox"), Mode::Outbox),
        (cfg!(feature = "cdc"), Mode::Cdc),
        (cfg!(feature = "self-read"), Mode::SelfRead),
        (cfg!(feature = "dual-write"), Mode::DualWrite),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode.name()))
    .collect()
}
