//! Order-service's domain: input is parsed into these types before anything
//! else happens, so the rest of the code only ever sees valid orders.

mod idempotency;
mod order;

pub use idempotency::IdempotencyKey;

pub use order::{
    Cancellation, CustomerId, InvalidStatus, MAX_CANCEL_REASON_LEN, MAX_ID_LEN, MAX_LINES,
    MAX_QUANTITY, MAX_UNIT_PRICE_MINOR, NewOrder, Order, OrderLine, OrderStatus, PlaceOrderRequest,
    ValidationError,
};
