//! The SQL of the tables every build shares: orders and their keys, the
//! mode row, the replication slots' memory, and the outbox's backlog (read
//! in every mode). A pattern's own SQL lives in its folder. Functions take a
//! connection or a transaction, so the caller owns the transaction boundary.

pub mod backlog;
pub mod cdc_slots;
pub mod idempotency;
pub mod mode;
pub mod orders;
pub mod replay;
