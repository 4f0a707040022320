//! rewards-service: consumes an order's events, credits reward points once
//! per order (`OrderPlaced`) and takes them back once if it is cancelled
//! (`OrderCancelled`), whatever order they arrive in.
//!
//! # Layout
//! - [`startup`]: [`Application`] — connects, migrates, binds, runs until stopped.
//! - [`config`]: flags with environment fallbacks.
//! - [`consumer`]: the durable, idempotent JetStream consumer.
//! - [`http`]: `GET /customers/{id}/rewards`, health, readiness, metrics.
//! - [`db`]: all SQL, and how one order's events are kept apart from another
//!   instance's.
//! - [`domain`]: the points rule and event checks (pure).

pub mod config;
pub mod consumer;
pub mod db;
pub mod domain;
pub mod http;
pub mod startup;

pub use startup::Application;
