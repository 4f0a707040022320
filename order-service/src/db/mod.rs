//! All of order-service's SQL. Functions take a connection or a transaction,
//! so the caller owns the transaction boundary.

#[cfg(any(feature = "outbox", feature = "cdc", feature = "dual-write"))]
pub mod idempotency;
#[cfg(feature = "self-read")]
pub mod inbox;
pub mod orders;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod projected;
