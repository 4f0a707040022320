//! The patterns that turn a placed order into exactly one `OrderPlaced`.
//!
//! Each pattern is one folder (or file), read top to bottom: its settings,
//! its write path, its worker, its SQL, and what it leaves behind when
//! order-service switches away from it ([`Pattern`]). This file only finds
//! the configured one.
//!
//! | mode | write path | what publishes |
//! |---|---|---|
//! | [`outbox`] | order + outbox row in one transaction | the relay (polling, or CDC on the outbox), after COMMIT |
//! | [`cdc`] | order, nothing else | the replication reader, from the WAL of `orders` |
//! | [`self_read`] | publish, await the PubAck, answer 202 | the request itself; the projector writes the order from its own event |
//! | [`dual_write`] | order, COMMIT, then publish | the request itself; a crash in between loses the event |
//!
//! Whatever the mode, [`switch`] first has every pattern publish what an
//! earlier mode or relay left behind before serving.

#[cfg(feature = "cdc")]
pub mod cdc;
#[cfg(feature = "dual-write")]
pub mod dual_write;
mod mode;
#[cfg(feature = "outbox")]
pub mod outbox;
mod pattern;
mod placement;
#[cfg(feature = "self-read")]
pub mod self_read;
#[cfg(any(feature = "outbox", feature = "cdc", feature = "dual-write"))]
mod store;
mod switch;

use tokio_util::sync::CancellationToken;

pub use mode::Mode;
pub use pattern::{Deps, Pattern, Started, Target, Watch, Worker, WritePath};
pub use placement::{Durability, Outcome, PlaceError, Placed, Placement};

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

/// Every pattern this build has.
const COMPILED: &[&dyn Pattern] = &[
    #[cfg(feature = "outbox")]
    &outbox::Outbox,
    #[cfg(feature = "cdc")]
    &cdc::Cdc,
    #[cfg(feature = "self-read")]
    &self_read::SelfRead,
    #[cfg(feature = "dual-write")]
    &dual_write::DualWrite,
];

/// Publishes what an earlier mode left (see [`switch`]), then starts
/// `mode`: its write path, and the worker to run until `shutdown`.
pub async fn start(
    mode: Mode,
    deps: Deps,
    args: &PatternArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<Started> {
    let pattern = COMPILED
        .iter()
        .find(|pattern| pattern.mode() == mode)
        .ok_or_else(|| not_compiled(mode))?;
    let target = pattern.target(&deps, args).await?;
    switch::before_serving(&target, COMPILED, &deps, args).await?;
    pattern.start(deps, args, shutdown).await
}

/// The start-up error for a mode this build left out.
fn not_compiled(mode: Mode) -> anyhow::Error {
    let compiled: Vec<_> = COMPILED.iter().map(|p| p.mode().name()).collect();
    anyhow::anyhow!(
        "mode {} is not in this build of order-service (compiled in: {})",
        mode.name(),
        compiled.join(", ")
    )
}
