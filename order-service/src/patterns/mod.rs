//! The patterns that turn a placed order into exactly one `OrderPlaced`.
//!
//! Each pattern is one module holding its write path and its background
//! worker; this file is the only place that matches on the [`Mode`].
//!
//! | mode | write path | what publishes |
//! |---|---|---|
//! | `outbox` | order + outbox row in one transaction | the relay, after COMMIT |
//! | `dual-write` | order, COMMIT, then publish | the request itself; a crash in between loses the event |

use clap::ValueEnum;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{IdempotencyKey, NewOrder, Order};

#[cfg(feature = "dual-write")]
mod dual_write;
#[cfg(feature = "outbox")]
pub mod outbox;
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
    pub jetstream: async_nats::jetstream::Context,
    pub names: shared_events::Names,
}

/// Tuning of the background workers.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub relay_batch_size: i64,
    pub relay_poll_interval: std::time::Duration,
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
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the idempotency key was already used for a different order")]
    KeyReused,
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
    #[cfg(feature = "dual-write")]
    DualWrite(dual_write::DualWrite),
}

impl Pattern {
    pub fn new(mode: Mode, deps: Deps, settings: WorkerSettings) -> Result<Self, UnavailableMode> {
        let _ = &settings;
        match mode {
            #[cfg(feature = "outbox")]
            Mode::Outbox => Ok(Pattern::Outbox(outbox::Outbox::new(deps, settings))),
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
            #[cfg(feature = "dual-write")]
            Pattern::DualWrite(_) => {}
        }
    }
}

/// The modes this binary was built with.
pub fn compiled_modes() -> Vec<&'static str> {
    [
        (cfg!(feature = "outbox"), Mode::Outbox),
        (cfg!(feature = "dual-write"), Mode::DualWrite),
    ]
    .into_iter()
    .filter_map(|(on, mode)| on.then_some(mode.name()))
    .collect()
}
