//! order-service: `POST /orders` stores an order, and the active pattern makes
//! sure exactly one `OrderPlaced` reaches JetStream for it.
//!
//! # Layout
//! - [`startup`]: [`Application`] — connects, migrates, binds, runs until stopped.
//! - [`config`]: flags with environment fallbacks.
//! - [`http`]: routes, handlers and the error type clients see.
//! - [`patterns`]: one module per mode (write path + background worker); the
//!   only `match` on the mode.
//! - [`replication`]: the logical-replication reader (slot, pgoutput, resync)
//!   that the `cdc` mode and the CDC outbox relay share.
//! - [`db`]: all SQL.
//! - [`domain`]: parsed, always-valid orders.
//!
//! Dependencies point one way: `startup -> http -> patterns -> {db, domain}`.

pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod patterns;
#[cfg(feature = "cdc")]
pub mod replication;
pub mod startup;

pub use startup::Application;
