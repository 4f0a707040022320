//! Order-service's domain: input is parsed into these types before anything
//! else happens, so the rest of the code only ever sees valid orders.

mod idempotency;
mod order;

pub use idempotency::IdempotencyKey;

/// Namespace of the ids derived deterministically (UUID v5): event ids of
/// replayable sources and the self-read ids of idempotency keys.
pub const ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f72_6465_722d_6576_656e_7473_2d69_6473);
pub use order::{
    CustomerId, LineRequest, MAX_LINES, NewOrder, Order, OrderLine, PlaceOrderRequest,
    ValidationError,
};
