//! rewards-service: consumes `OrderPlaced` and credits reward points once per order.
//!
//! # Layout
//! - [`startup`]: [`Application`] — connects, migrates, binds, runs until stopped.
//! - [`config`]: flags with environment fallbacks.
//! - [`consumer`]: the durable, idempotent JetStream consumer.
//! - [`http`]: `GET /customers/{id}/rewards`, health, readiness, metrics.
//! - [`db`]: all SQL.
//! - [`domain`]: the points rule and event checks (pure).

pub mod config;
pub mod consumer;
pub mod db;
pub mod domain;
pub mod http;
pub mod startup;

pub use startup::Application;
