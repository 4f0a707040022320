//! Start-up: the settings every service takes, patient connections to
//! PostgreSQL and NATS, and the [`Core`] a service holds once connected.
//!
//! # Layout
//! - `args`: [`ServiceArgs`], flattened into each service's configuration.
//! - `core`: [`Core`], and the broker gauges read through it.
//! - `connect`: [`connect`] at start-up, waiting for the servers; and the
//!   NATS client of a command, which does not wait.
//! - `retry`: the backoff and the deadline-bound retries behind them.
//! - `unreachable` (feature `test-support`): `Core::unreachable`, a core
//!   whose dependencies cannot be reached, for in-process HTTP tests.

mod args;
mod connect;
mod core;
mod retry;
#[cfg(feature = "test-support")]
mod unreachable;

pub use self::core::Core;
pub use args::ServiceArgs;
pub use connect::{
    Connected, connect, connect_database, connect_nats, connect_nats_once, nats_servers,
};
pub use retry::{backoff, pauses, retry_until, retry_until_unless};
