//! The part of placing an order that every database-first pattern shares:
//! claim the idempotency key and insert the order, in a transaction the
//! pattern then finishes.

use anyhow::Context as _;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{PlaceError, Placement};
use crate::db;
use crate::db::idempotency::Claim;
use crate::domain::Order;

pub(crate) enum Begun {
    /// The key placed this order before; nothing was written.
    Replayed(Order),
    /// The order is inserted in the open transaction; the pattern adds its own
    /// rows and commits.
    New(Transaction<'static, Postgres>, Order),
}

pub(crate) async fn begin(pool: &PgPool, placement: Placement) -> Result<Begun, PlaceError> {
    let mut tx = pool
        .begin()
        .await
        .context("beginning the order transaction")?;
    let id = Uuid::now_v7();
    if let Some(key) = &placement.key {
        let fingerprint = placement.order.fingerprint();
        let claim = db::idempotency::claim(
            &mut tx,
            placement.order.customer_id(),
            key,
            &fingerprint,
            id,
        )
        .await
        .context("claiming the idempotency key")?;
        if let Claim::Taken {
            order_id,
            request_hash,
        } = claim
        {
            if request_hash != fingerprint {
                return Err(PlaceError::KeyReused);
            }
            let order = db::orders::find(&mut tx, order_id)
                .await
                .context("loading the order of a replayed key")?
                .context("an idempotency key points at a missing order")?;
            return Ok(Begun::Replayed(order));
        }
    }
    let order = db::orders::insert(&mut tx, id, &placement.order)
        .await
        .context("inserting the order")?;
    Ok(Begun::New(tx, order))
}

/// Whether [`commit`] stored a new order or found the key's earlier one.
#[cfg(any(feature = "cdc", feature = "dual-write"))]
pub(crate) enum Stored {
    New(Order),
    Replayed(Order),
}

/// The order committed on its own, for the patterns whose transaction holds
/// nothing else.
#[cfg(any(feature = "cdc", feature = "dual-write"))]
pub(crate) async fn commit(pool: &PgPool, placement: Placement) -> Result<Stored, PlaceError> {
    match begin(pool, placement).await? {
        Begun::Replayed(order) => Ok(Stored::Replayed(order)),
        Begun::New(tx, order) => {
            tx.commit().await.context("committing the order")?;
            service_kit::crash::crash_point("after_commit_before_publish");
            Ok(Stored::New(order))
        }
    }
}
