//! The plumbing order-service and rewards-service share, so that each service
//! crate holds only its own domain and pattern code.
//!
//! # Layout
//! - [`telemetry`]: logs to stdout, traces, and the Prometheus recorder.
//! - [`meters`]: every metric's name, labels and HELP text, in one place.
//! - [`trace`]: W3C trace context across HTTP, the database and the broker;
//!   OTLP export.
//! - [`shutdown`]: the ctrl-c / SIGTERM future passed into `run_until_stopped`.
//! - [`consumer`]: the loop of an idempotent `OrderPlaced` consumer.
//! - [`failure`]: which failures to isolate, retry, or wait out.
//! - [`crash`]: named crash points (and fault points) for the fault tests.
//! - [`http`]: the JSON error body, a JSON extractor that reports bad input
//!   in that body, the middleware that logs internal errors and counts
//!   requests, and the probes.
//! - [`limits`]: the request timeout and the concurrency cap that sheds load.
//! - [`openapi`]: the OpenAPI document each service serves at `/openapi.json`,
//!   and the error answers its handlers share.
//! - [`serve`]: the public listener and the optional admin listener.
//! - [`db_unavailable`]: which database errors are a 503, not a 500.
//! - [`startup`]: the settings every service takes, patient connections to
//!   PostgreSQL and NATS, and the [`startup::Core`] a service holds.
//! - [`duration`]: `250ms` / `2s` / `1m` for command-line flags and queries.

pub mod consumer;
pub mod crash;
pub mod db_unavailable;
pub mod duration;
pub mod failure;
pub mod http;
pub mod limits;
pub mod meters;
pub mod openapi;
pub mod ops;
pub mod serve;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod trace;
