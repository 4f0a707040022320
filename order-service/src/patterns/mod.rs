//! The patterns that turn a placed order into exactly one `OrderPlaced`.
//!
//! Each pattern is one folder (or file) holding its settings, its write path
//! and its background worker, read top to bottom; this file only dispatches.
//!
//! | mode | write path | what publishes |
//! |---|---|---|
//! | [`outbox`] | order + outbox row in one transaction | the relay (polling, or CDC on the outbox), after COMMIT |
//! | [`cdc`] | order, nothing else | the replication reader, from the WAL of `orders` |
//! | [`self_read`] | publish, await the PubAck, answer 202 | the request itself; the projector writes the order from its own event |
//! | [`dual_write`] | order, COMMIT, then publish | the request itself; a crash in between loses the event |
//!
//! Whatever the mode, [`switch`] first publishes what an earlier mode or relay
//! left behind before serving.

#[cfg(feature = "cdc")]
pub mod cdc;
#[cfg(feature = "dual-write")]
pub mod dual_write;
mod mode;
#[cfg(feature = "outbox")]
pub mod outbox;
mod placement;
#[cfg(feature = "self-read")]
pub mod self_read;
#[cfg(any(feature = "outbox", feature = "cdc", feature = "dual-write"))]
mod store;
mod switch;

use tokio_util::sync::CancellationToken;

pub use mode::{Mode, not_compiled};
pub use placement::{Deps, Durability, Outcome, PlaceError, Placed, Placement, Worker};
pub use switch::PROJECTOR_DURABLE;

/// Each pattern's own settings; a pattern reads only its own.
#[derive(Debug, Clone, clap::Args)]
pub struct PatternArgs {
    #[cfg(feature = "outbox")]
    #[command(flatten)]
    pub outbox: outbox::Args,
    /// Shared by the `cdc` mode and the CDC outbox relay.
    #[cfg(feature = "cdc")]
    #[command(flatten)]
    pub replication: crate::replication::Args,
    #[cfg(feature = "self-read")]
    #[command(flatten)]
    pub self_read: self_read::Args,
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
    /// Publishes what an earlier mode left (see [`switch`]), then starts
    /// `mode`: its write path, and the worker to run until `shutdown`.
    pub async fn start(
        mode: Mode,
        deps: Deps,
        args: &PatternArgs,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Self, Option<Worker>)> {
        switch::before_serving(mode, &deps, args).await?;
        Ok(match mode {
            #[cfg(feature = "outbox")]
            Mode::Outbox => map(outbox::start(deps, args, shutdown).await?, Self::Outbox),
            #[cfg(feature = "cdc")]
            Mode::Cdc => map(
                cdc::start(deps, &args.replication, shutdown).await?,
                Self::Cdc,
            ),
            #[cfg(feature = "self-read")]
            Mode::SelfRead => map(
                self_read::start(deps, &args.self_read, shutdown),
                Self::SelfRead,
            ),
            #[cfg(feature = "dual-write")]
            Mode::DualWrite => map(dual_write::start(deps, shutdown), Self::DualWrite),
            #[cfg(not(feature = "outbox"))]
            Mode::Outbox => return Err(not_compiled(mode)),
            #[cfg(not(feature = "cdc"))]
            Mode::Cdc => return Err(not_compiled(mode)),
            #[cfg(not(feature = "self-read"))]
            Mode::SelfRead => return Err(not_compiled(mode)),
            #[cfg(not(feature = "dual-write"))]
            Mode::DualWrite => return Err(not_compiled(mode)),
        })
    }

    /// Whether placing an order waits on the broker (self-read and the
    /// dual write publish on the request path); the outbox and CDC store
    /// orders without it and publish later.
    pub fn places_through_broker(&self) -> bool {
        match self {
            #[cfg(feature = "outbox")]
            Self::Outbox(_) => false,
            #[cfg(feature = "cdc")]
            Self::Cdc(_) => false,
            #[cfg(feature = "self-read")]
            Self::SelfRead(_) => true,
            #[cfg(feature = "dual-write")]
            Self::DualWrite(_) => true,
        }
    }

    /// Stores (and, depending on the mode, announces) an order: the span
    /// `place order`, whose trace context the event carries on.
    #[tracing::instrument(name = "place order", skip_all)]
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        match self {
            #[cfg(feature = "outbox")]
            Self::Outbox(p) => p.place(placement).await,
            #[cfg(feature = "cdc")]
            Self::Cdc(p) => p.place(placement).await,
            #[cfg(feature = "self-read")]
            Self::SelfRead(p) => p.place(placement).await,
            #[cfg(feature = "dual-write")]
            Self::DualWrite(p) => p.place(placement).await,
        }
    }
}

fn map<P>(
    (pattern, worker): (P, Option<Worker>),
    wrap: impl FnOnce(P) -> Pattern,
) -> (Pattern, Option<Worker>) {
    (wrap(pattern), worker)
}
