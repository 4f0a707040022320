//! All of order-service's SQL. Functions take a connection or a transaction,
//! so the caller owns the transaction boundary.

pub mod backlog;
pub mod cdc_slots;
pub mod idempotency;
#[cfg(feature = "self-read")]
pub mod inbox;
#[cfg(not(feature = "outbox"))]
pub mod leftovers;
pub mod mode;
pub mod orders;
#[cfg(feature = "outbox")]
pub mod outbox;
pub mod projected;
pub mod replay;
