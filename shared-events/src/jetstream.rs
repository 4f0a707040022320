//! JetStream set-up and publishing. This is the only place that talks to NATS
//! on the producing side, so the two rules of the design live here: every
//! publish carries `Nats-Msg-Id` = event id, and nothing counts as published
//! until its PubAck arrived.
//!
//! # Layout
//! - `streams`: creating the streams and making an existing one fit.
//! - `requirements`: what an existing stream must be to keep every event.
//! - `consumer`: creating and checking a durable pull consumer.
//! - `publish`: one event out, with its message id, counted on its PubAck.
//! - `batch`: many events out, as atomic batches where the stream takes them.
//! - `republish`: orders published again, under their own event ids.
//! - `dead_letter`: unprocessable messages to the dead-letter stream.

use chrono::{DateTime, Utc};

mod batch;
mod consumer;
mod dead_letter;
mod publish;
mod republish;
mod requirements;
mod streams;

pub use batch::{MAX_ATOMIC_BATCH, Outgoing, PendingBatch, Publisher};
pub use consumer::ensure_consumer;
pub use dead_letter::{DeadLetter, dead_letter_headers, publish_dead_letter};
pub use publish::{Confirmed, PendingAck, PublishError, Published, TRACEPARENT, publish, send};
pub use republish::republish_orders;
pub use requirements::{Correction, Refusal, Review, review};
pub use streams::{StreamFeatures, StreamSettings, StreamSetupError, ensure_streams};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Converts the server timestamp of a JetStream message.
pub fn stored_at(unix_nanos: i128) -> DateTime<Utc> {
    let nanos = i64::try_from(unix_nanos).unwrap_or(i64::MAX);
    DateTime::from_timestamp_nanos(nanos)
}
