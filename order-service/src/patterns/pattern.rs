//! What a pattern is to the rest of order-service: how it starts, what it
//! serves (a [`WritePath`], a [`Worker`]), and what it leaves behind when
//! order-service switches away from it.

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Mode, PatternArgs, PlaceError, Placed, Placement};

/// What every pattern needs from the outside world.
#[derive(Clone)]
pub struct Deps {
    pub pool: PgPool,
    /// For the replication connection and self-read's `LISTEN`, which
    /// sqlx's pool cannot lend.
    pub database_url: String,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    /// Publishes a relay's or a reader's events as one batch.
    pub publisher: shared_events::jetstream::Publisher,
    pub names: shared_events::Names,
    /// When start-up gives up, draining what a switch left included.
    pub startup_deadline: tokio::time::Instant,
}

impl Deps {
    /// What change data capture works with.
    #[cfg(feature = "cdc")]
    pub fn replication(&self) -> crate::replication::Connections {
        crate::replication::Connections {
            pool: self.pool.clone(),
            database_url: self.database_url.clone(),
            publisher: self.publisher.clone(),
            names: self.names.clone(),
        }
    }
}

/// A pattern's background work (relay, replication reader, projector): it
/// runs until its shutdown token is cancelled, and ends with an error only
/// when going on would be unsafe — which stops the service.
pub type Worker = BoxFuture<'static, anyhow::Result<()>>;

/// One pattern compiled into this build.
pub trait Pattern: Sync {
    /// The mode it serves.
    fn mode(&self) -> Mode;

    /// What it writes under and streams when configured by `args`.
    fn target<'a>(
        &'a self,
        _deps: &'a Deps,
        _args: &'a PatternArgs,
    ) -> BoxFuture<'a, anyhow::Result<Target>> {
        Box::pin(async { Ok(Target::plain(self.mode())) })
    }

    /// Starts serving: the write path, and the worker to run until `shutdown`.
    fn start<'a>(
        &'a self,
        deps: Deps,
        args: &'a PatternArgs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Started>>;

    /// Publishes (or applies) what this pattern may have left behind that
    /// `next` will not: before a switch serves, in every start. Idempotent,
    /// within the start-up deadline.
    fn leave<'a>(
        &'a self,
        _deps: &'a Deps,
        _args: &'a PatternArgs,
        _next: &'a Target,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The configuration a start leads to: the name its orders are written
/// under (which the mode row holds, see `db::mode`), and the replication
/// slot it streams, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub fence: &'static str,
    pub slot: Option<String>,
}

impl Target {
    /// A mode that writes under its own name and streams no slot.
    pub fn plain(mode: Mode) -> Self {
        Self {
            fence: mode.name(),
            slot: None,
        }
    }
}

/// A started pattern.
pub struct Started {
    pub write: Box<dyn WritePath>,
    pub worker: Option<Worker>,
}

/// How a pattern places an order.
pub trait WritePath: Send + Sync {
    /// Stores (and, depending on the mode, announces) an order.
    fn place(&self, placement: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>>;

    /// Whether placing an order waits on the broker (self-read and the
    /// dual write publish on the request path); the outbox and CDC store
    /// orders without it and publish later.
    fn places_through_broker(&self) -> bool {
        false
    }

    /// For a `GET /orders/{id}?wait=` reader: what tells it that the order
    /// may have been stored since its last look. Only a pattern that stores
    /// orders after answering (self-read) has one; in the others, the
    /// request that placed the order stored it.
    fn watch(&self, _id: Uuid) -> Option<Box<dyn Watch>> {
        None
    }
}

/// One reader's watch on one order id; dropping it ends the watch.
pub trait Watch: Send {
    /// Resolves when the order may have been stored since the last call
    /// (also while the caller was looking).
    fn announced(&mut self) -> BoxFuture<'_, ()>;
}
