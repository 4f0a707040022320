//! Crediting `OrderPlaced`: the part of the idempotent consumer that is
//! rewards-service's own (the loop is `service_kit::consumer`).
//!
//! A batch of events is credited in one transaction: the ledger rows and the
//! balances. A redelivery, or the same order under another event id, hits the
//! ledger's keys (event id primary key, order id unique) and changes nothing.
//! An event whose content breaks the rules (unknown currency, a total that is
//! not the sum of its lines) can never be credited and is dead-lettered; so is
//! one whose credit would overflow its customer's balance (SQLSTATE 22003,
//! pinned on that one event by the consumer loop).

use anyhow::Context as _;
use service_kit::consumer::{Applied, Apply};
use shared_events::OrderEvent;
use sqlx::PgPool;

use crate::db;
use crate::domain::Credit;

/// Credits each order once.
pub struct Credits {
    pool: PgPool,
}

impl Credits {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Apply for Credits {
    type Item = (Credit, u64);

    const IDEMPOTENCY_KEYS: &'static [&'static str] = &[
        "reward_ledger_pkey",
        "reward_ledger_order_id_key",
        "reward_accounts_pkey",
    ];

    fn prepare(&self, event: OrderEvent, stream_sequence: u64) -> anyhow::Result<Self::Item> {
        match event {
            OrderEvent::Placed(event) => Ok((Credit::from_event(&event)?, stream_sequence)),
            OrderEvent::Cancelled(_) => {
                anyhow::bail!("rewards-service does not apply OrderCancelled yet")
            }
        }
    }

    async fn apply_batch(&self, credits: Vec<Self::Item>) -> anyhow::Result<Vec<Applied>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the credit transaction")?;
        let credited = db::credit_all(&mut tx, &credits)
            .await
            .context("writing the credits")?;
        tx.commit().await.context("committing the credits")?;
        Ok(credited
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
