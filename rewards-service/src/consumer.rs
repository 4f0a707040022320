//! Crediting an `OrderPlaced`: the part of the idempotent consumer that is
//! rewards-service's own (the loop is `service_kit::consumer`).
//!
//! One transaction inserts the ledger row and adds to the balance. A
//! redelivery, or the same order under another event id, hits the ledger's
//! keys (event id primary key, order id unique) and changes nothing. An event
//! whose content breaks the rules (unknown currency, a total that is not the
//! sum of its lines) can never be credited and is dead-lettered.

use anyhow::Context as _;
use service_kit::consumer::{Applied, Apply, ApplyError};
use shared_events::{Envelope, OrderPlaced};
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
    async fn apply(
        &self,
        event: Envelope<OrderPlaced>,
        stream_sequence: u64,
    ) -> Result<Applied, ApplyError> {
        let credit = Credit::from_event(&event).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the credit transaction")?;
        let credited = db::credit(&mut tx, &credit, stream_sequence)
            .await
            .context("writing the credit")?;
        tx.commit().await.context("committing the credit")?;
        Ok(if credited {
            Applied::New
        } else {
            Applied::Duplicate
        })
    }
}
