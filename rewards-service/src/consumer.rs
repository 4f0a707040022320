//! Crediting `OrderPlaced` and reversing the credit on `OrderCancelled`: the
//! part of the idempotent consumer that is rewards-service's own (the loop
//! is `service_kit::consumer`).
//!
//! A batch of events is applied in one transaction: the ledger rows and the
//! balances. A redelivery, or the same order's event under another event id,
//! hits the ledger's keys (event id primary key, one credit and one reversal
//! per order) and changes nothing. A cancellation that arrives before its
//! credit is recorded, acknowledged, and applied with the credit when it
//! comes, so that the balance nets to zero (see [`db`]). An event whose
//! content breaks the rules (unknown currency, a total that is not the sum
//! of its lines) can never be applied and is dead-lettered; so is a
//! cancellation that names another customer or total than its order's
//! credit, and one event whose credit would overflow its customer's balance
//! (SQLSTATE 22003) — each pinned on that one event by the consumer loop.

use anyhow::Context as _;
use service_kit::consumer::{Applied, Apply};
use shared_events::OrderEvent;
use sqlx::PgPool;

use crate::db;
use crate::domain::{Change, Credit, Reversal};

/// Credits each order once, and reverses a cancelled order's credit once.
pub struct Credits {
    pool: PgPool,
}

impl Credits {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Apply for Credits {
    type Item = (Change, u64);

    const IDEMPOTENCY_KEYS: &'static [&'static str] = &[
        "reward_ledger_pkey",
        "reward_ledger_order_id_kind_key",
        "reversals_awaiting_credit_pkey",
        "reward_accounts_pkey",
    ];

    fn prepare(&self, event: OrderEvent, stream_sequence: u64) -> anyhow::Result<Self::Item> {
        let change = match event {
            OrderEvent::Placed(event) => Change::Credit(Credit::from_event(&event)?),
            OrderEvent::Cancelled(event) => Change::Reversal(Reversal::from_event(&event)?),
        };
        Ok((change, stream_sequence))
    }

    async fn apply_batch(&self, changes: Vec<Self::Item>) -> anyhow::Result<Vec<Applied>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the rewards transaction")?;
        let applied = db::apply(&mut tx, &changes).await?;
        tx.commit().await.context("committing the rewards")?;
        Ok(applied
            .into_iter()
            .map(|new| {
                if new {
                    Applied::New
                } else {
                    Applied::Duplicate
                }
            })
            .collect())
    }
}
