//! All of order-service's SQL. Functions take a connection or a transaction,
//! so the caller owns the transaction boundary.

pub mod idempotency;
pub mod orders;
#[cfg(feature = "outbox")]
pub mod outbox;
