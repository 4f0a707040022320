//! The patterns that turn a placed order into exactly one `OrderPlaced`.
//!
//! Each pattern is one module holding its write path and its background
//! worker; this file is the only place that matches on the [`Mode`].
//!
//! | mode | write path | what publishes |
//! |---|---|---|
//! | `outbox` | order + outbox row in one transaction | the relay, after COMMIT |
//! | `self-read` | publish, await the PubAck, answer 202 | the request itself; the projector writes the order from its own event |
//! | `dual-write` | order, COMMIT, then publish | the request itself; a crash in between loses the event |

use clap::ValueEnum;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{IdempotencyKey, NewOrder, Order};

#[cfg(not(any(feature = "outbox", feature = "self-read", feature = "dual-write")))]
compile_error!("order-service needs at least one pattern feature: outbox, self-read or dual-write");

#[cfg(feature = "dual-write")]
mod dual_write;
#[cfg(feature = "outbox")]
pub mod outbox;
#[cfg(feature = "self-read")]
pub mod self_read;
#[cfg(any(feature = "outbox", feature = "dual-write"))]
mod store;

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

/// What every pattern needs from the outside world.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub names: shared_events::Names,
}

/// Tuning of the background workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub relay_batch_size: i64,
    pub relay_poll_interval: std::time::Duration,
    /// Self-read: how long a request waits for its PubAck before answering 503.
    pub publish_timeout: std::time::Duration,
    /// Self-read: the projector's ack wait.
    pub consumer_ack_wait: std::time::Duration,
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
    #[error("the event broker did not acknowledge in time")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The mode was not compiled into this binary.
#[derive(Debug, thiserror::Error)]
#[error("mode {0} is not available in this build of order-service (compiled in: {1})")]
pub struct UnavailableMode(&'static str, String);

/// The active pattern.
pub enum Pattern {
    #[cfg(feature = "outbox")]
    Outbox(outbox::Outbox),
    #[cfg(feature = "self-read")]
    SelfRead(self_read::SelfRead),
    #[cfg(feature = "dual-write")]
    DualWrite(dual_write::DualWrite),
}

impl Pattern {
    pub fn new(mode: Mode, deps: Deps, settings: WorkerSettings) -> Result<Self, UnavailableMode> {
        let _ = &settings;
        match mode {
            #[cfg(feature = "outbox")]
            Mode::Outbox => Ok(Pattern::Outbox(outbox::Outbox::new(deps, settings))),
            #[cfg(feature = "self-read")]
            Mode::SelfRead => Ok(Pattern::SelfRead(self_read::SelfRead::new(deps, settings))),
            #[cfg(feature = "dual-write")]
            Mode::DualWrite => Ok(Pattern::DualWrite(dual_write::DualWrite::new(deps))),
            #[allow(unreachable_patterns)]
            other => Err(UnavailableMode(other.name(), compiled_modes().join(", "))),
        }
    }

    /// Stores (and, depending on the mode, announces) an order.
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        match self {
            #[cfg(feature = "outbox")]
            Pattern::Outbox(p) => p.place(placement).await,
            #[cfg(feature = "self-read")]
            Pattern::SelfRead(p) => p.place(placement).await,
            #[cfg(feature = "dual-write")]
            Pattern::DualWrite(p) => p.place(placement).await,
        }
    }

    /// Starts the mode's background worker, if it has one; it stops when
    /// `shutdown` is cancelled, after finishing the batch in hand.
    pub fn spawn_worker(&self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let _ = (tasks, &shutdown);
        match self {
            #[cfg(feature = "outbox")]
            Pattern::Outbox(p) => {
                tasks.spawn(p.relay().run(shutdown));
            }
            #[cfg(feature = "self-read")]
            Pattern::SelfRead(p) => {
                tasks.spawn(p.projector().run(shutdown));
            }
            #[cfg(feature = "dual-write")]
            Pattern::DualWrite(_) => {}
        }
    }
}

/// The modes this binary was built with.
pub fn compiled_modes() -> Vec<&'static str> {
    [
        (cfg!(feature = "outbox"), Mode::Outbox),
        (cfg!(feature = "self-read"), Mode::SelfRead),
        (cfg!(feature = "dual-write"), Mode::DualWrite),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode.name()))
    .collect()
}
