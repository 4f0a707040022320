//! What every pattern takes and gives back: the order to place, the answer,
//! and the ways placing can fail.

use uuid::Uuid;

use crate::domain::{IdempotencyKey, NewOrder, Order};

/// An order to place, under the client's idempotency key or one made for
/// it: every order is placed under a key, whose order id it takes
/// ([`IdempotencyKey::order_id`]), so that a request whose outcome is
/// unknown can always be retried with one.
pub struct Placement {
    pub order: NewOrder,
    pub key: IdempotencyKey,
    /// Whether the client sent the key (else nobody knew it before the
    /// request, so no earlier request can have used it).
    pub client_key: bool,
}

impl Placement {
    /// The id the order takes: the same for every retry under the key.
    pub fn order_id(&self) -> Uuid {
        self.key.order_id(self.order.customer_id())
    }
}

/// A placed order, and whether this request placed it.
pub struct Placed {
    pub order: Order,
    pub outcome: Outcome,
    pub durability: Durability,
}

/// Whether a request placed its order or found it placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This request placed the order.
    New,
    /// The idempotency key had placed it before; nothing new happened.
    Replayed,
}

/// How far an order got before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Committed to the order database (201 Created).
    Stored,
    /// Acknowledged by the broker; the order database follows (202 Accepted).
    Accepted,
}

impl Placed {
    /// Committed to the order database, now or before.
    pub fn stored(order: Order, outcome: Outcome) -> Self {
        Self {
            order,
            outcome,
            durability: Durability::Stored,
        }
    }

    /// In the stream, now or before; the order database follows.
    pub fn accepted(order: Order, outcome: Outcome) -> Self {
        Self {
            order,
            outcome,
            durability: Durability::Accepted,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("the idempotency key was already used for a different order")]
    KeyReused,
    /// Certain that nothing was stored: nothing was sent.
    #[error("the event broker is unavailable")]
    Unavailable,
    /// Certain that nothing was stored: order-service was switched to
    /// another mode since this instance started, and this instance's
    /// writes would not be published by it.
    #[error("order-service now runs in mode {active:?}; this instance runs {ours:?}")]
    ModeSwitched { ours: &'static str, active: String },
    /// Sent, but whether the broker stored it is not known: a retry with the
    /// same key resolves it to the original outcome.
    #[error("the outcome is unknown")]
    Unknown { key: IdempotencyKey },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}
