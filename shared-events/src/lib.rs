//! The contract between order-service and rewards-service.
//!
//! # Layout
//! - [`envelope`]: the event envelope every message carries, and the [`Event`] trait.
//! - [`contract`]: the JSON Schema of each event, committed under `docs/schemas/`.
//! - [`order`]: `OrderPlaced` and `OrderCancelled`, schema version 1, and
//!   [`OrderEvent`], either of them.
//! - [`money`]: ISO 4217 currencies and their minor units.
//! - [`names`]: stream, subject and consumer names, built from a prefix so that
//!   several deployments (or tests) can share one NATS server.
//! - [`jetstream`]: stream set-up and the one publish path: every publish sets
//!   `Nats-Msg-Id` to the event id and awaits the PubAck.

pub mod contract;
pub mod envelope;
pub mod jetstream;
pub mod money;
pub mod names;
pub mod order;

pub use envelope::{Envelope, Event};
pub use jetstream::{PendingAck, PublishError, Published, StreamFeatures, StreamSettings};
pub use money::Currency;
pub use names::Names;
pub use order::{
    ID_NAMESPACE, OrderCancelled, OrderEvent, OrderPlaced, OrderPlacedLine, cancelled_event_id,
    placed_event_id,
};
