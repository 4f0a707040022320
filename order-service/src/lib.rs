//! order-service: `POST /orders` stores an order, and the active pattern makes
//! sure exactly one `OrderPlaced` reaches JetStream for it.
//!
//! # Layout
//! - [`startup`]: [`Application`] — connects, migrates, binds, runs until stopped.
//! - [`config`]: flags with environment fallbacks.
//! - [`http`]: routes, handlers and the error type clients see.
//! - [`patterns`]: one folder per mode: its write path, worker, SQL, read
//!   side and what it leaves behind on a switch.
//! - [`replication`]: the logical-replication reader (slot, pgoutput, resync)
//!   that the `cdc` mode and the CDC outbox relay share.
//! - [`db`]: the SQL of the tables every mode shares.
//! - [`domain`]: parsed, always-valid orders.
//!
//! Dependencies point one way: `startup -> http -> patterns -> replication
//! -> {db, domain}`.

pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod patterns;
#[cfg(feature = "cdc")]
pub mod replication;
pub mod startup;

pub use startup::Application;
