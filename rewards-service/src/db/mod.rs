//! All of rewards-service's SQL.
//!
//! The ledger holds at most one credit and one reversal per order
//! (`UNIQUE (order_id, kind)`), each under its event's id (the primary key):
//! a redelivery, or the same order's event under another id, changes
//! nothing. A cancellation that arrives before its order's credit is kept in
//! `reversals_awaiting_credit` and applied by the credit when it comes, so
//! that a cancellation is never applied as a reversal of nothing, never
//! lost, and the balance never goes below what was credited.
//!
//! - [`apply`]: a batch of events, in the caller's transaction: first
//!   [`lock_orders`], so that two instances never apply one order's events
//!   at once; then [`credit_all`], a batch of credits in one statement (the
//!   common case), or [`apply_changes`], a batch with cancellations, read
//!   then written in one statement;
//! - the reads of the API and of the gauges ([`read`]).

mod changes;
mod credits;
mod read;
#[cfg(test)]
mod tests;

use anyhow::Context as _;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Change;

pub use changes::apply_changes;
pub use credits::credit_all;
pub use read::{Credited, EntryKind, LedgerEntry, awaiting_credit, balance, ledger, ledger_page};

/// Applies a batch of credits and cancellations in the caller's
/// transaction; returns, per change, whether it was new (else it, or its
/// order's event of its kind under another id, was applied before). A
/// cancellation that disagrees with its order's credit fails the batch with
/// a [`Refused`](service_kit::failure::Refused).
pub async fn apply(
    conn: &mut PgConnection,
    changes: &[(Change, u64)],
) -> anyhow::Result<Vec<bool>> {
    let orders: Vec<Uuid> = changes.iter().map(|(c, _)| c.order_id()).collect();
    lock_orders(conn, &orders)
        .await
        .context("locking the batch's orders")?;
    let credits: Option<Vec<_>> = changes
        .iter()
        .map(|(change, sequence)| match change {
            Change::Credit(credit) => Some((credit, *sequence)),
            Change::Reversal(_) => None,
        })
        .collect();
    match credits {
        Some(credits) => credit_all(conn, &credits)
            .await
            .context("writing the credits"),
        None => apply_changes(conn, changes)
            .await
            .context("writing the credits and reversals"),
    }
}

/// Serialises the transactions that apply events of `orders`: takes a
/// transaction-level advisory lock per order, all in one statement, in key
/// order. Call it first in the transaction, before any write.
///
/// Under READ COMMITTED, a credit and a cancellation of one order applied
/// at the same moment by two instances would each miss the other's
/// uncommitted row: the credit would find no cancellation awaiting it, the
/// cancellation no credit to reverse, and the cancellation would wait for a
/// credit that already came. With the lock, the second transaction's next
/// statement starts after the first committed, and sees it. A row lock
/// cannot do this: before its first event an order has no row to lock, and
/// the balance rows are per customer, not per order. The keys are taken in
/// ascending order in one statement, before any row lock (whose order the
/// writes keep by customer), so two batches never wait on each other in
/// opposite orders; two orders whose keys collide (64 bits of their ids)
/// only wait for each other.
pub async fn lock_orders(conn: &mut PgConnection, orders: &[Uuid]) -> sqlx::Result<()> {
    let mut keys: Vec<i64> = orders.iter().map(|id| lock_key(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    // unnest yields the keys in the array's order, and each row's lock is
    // taken before the next row is read.
    sqlx::query_scalar!(
        "SELECT count(pg_advisory_xact_lock(key)) FROM unnest($1::bigint[]) AS key",
        &keys
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// An order's advisory lock key: its id folded to 64 bits.
fn lock_key(order_id: Uuid) -> i64 {
    let id = order_id.as_u128();
    // Truncation is the fold: the two halves of the id, XORed.
    #[allow(clippy::cast_possible_truncation)]
    let folded = (id as u64) ^ ((id >> 64) as u64);
    i64::from_ne_bytes(folded.to_ne_bytes())
}
