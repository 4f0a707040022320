//! `self-read`: publish first, then read your own event.
//!
//! Write path: `POST /orders` validates, publishes `OrderPlaced` and awaits
//! the PubAck, then answers 202 Accepted. Nothing is written to the order
//! database on the request path; the [`projector`] — a durable consumer like
//! any other — writes the order history from the event, as rewards-service
//! credits points from the same event. The stream is the source of truth.
//!
//! Guarantee: an acknowledged publish reaches both services; a publish that
//! was not acknowledged in time has no effect anywhere. The trap is the
//! ghost — a publish that times out, is reported as failed (503), and lands
//! anyway. Three rules close it:
//! 1. nothing is sent while the NATS connection is down (the client would
//!    buffer it and send it after reconnecting);
//! 2. every publish carries an `Accept-By` deadline, and every consumer ignores
//!    a message JetStream stored after it;
//! 3. ids derive from the `Idempotency-Key`, so a retry of a lost answer
//!    publishes the same event (broker dedup) for the same order (consumer
//!    dedup). If the broker reports the retry as a duplicate of an attempt
//!    that landed too late (and so was ignored), the retry publishes under the
//!    next attempt's event id instead.
//!
//! Without a key, a 503 means "not placed" only up to rule 2; clients that
//! retry should always send one.

pub mod projector;

use std::time::Duration;

use anyhow::Context as _;
use chrono::{SubsecRound as _, Utc};
use shared_events::jetstream::{self, stored_at, stored_too_late};
use shared_events::{Envelope, Published};
use uuid::Uuid;

use super::{Deps, Durability, PlaceError, Placed, Placement, WorkerSettings};
use crate::db;
use crate::domain::{ID_NAMESPACE, IdempotencyKey, Order};
use service_kit::crash::crash_point;

/// Added to the publish timeout to form the deadline, so that a clock
/// running ahead on the NATS server cannot make an acknowledged publish look late.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(1);
/// Attempts per request when earlier attempts of the same key landed too late.
const MAX_ATTEMPTS: u32 = 3;

pub struct SelfRead {
    deps: Deps,
    settings: WorkerSettings,
}

impl SelfRead {
    pub fn new(deps: Deps, settings: WorkerSettings) -> Self {
        Self { deps, settings }
    }

    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let Placement { order, key } = placement;
        let order_id = match &key {
            Some(key) => Uuid::new_v5(&ID_NAMESPACE, format!("order:{}", key.as_str()).as_bytes()),
            None => Uuid::now_v7(),
        };
        if key.is_some()
            && let Some(existing) = self.projected(order_id).await
        {
            if !existing.has_content_of(&order) {
                return Err(PlaceError::KeyReused);
            }
            return Ok(Placed {
                order: existing,
                replayed: true,
                durability: Durability::Accepted,
            });
        }

        // Microseconds, as PostgreSQL keeps them: the projected order must
        // read back exactly as answered.
        let order = Order::new(order_id, &order, Utc::now().trunc_subsecs(6));
        let mut published = None;
        for attempt in 0..MAX_ATTEMPTS {
            let result = self.publish(&order, key.as_ref(), attempt).await?;
            if !(result.duplicate && self.landed_too_late(result.stream_sequence).await?) {
                published = Some(result);
                break;
            }
            tracing::warn!(order_id = %order.id, attempt, "an earlier attempt landed after its deadline; publishing again");
        }
        let published = published.ok_or_else(|| {
            PlaceError::Internal(anyhow::anyhow!("every attempt landed after its deadline"))
        })?;
        crash_point("self_read_after_publish");
        metrics::counter!("events_published_total", "source" => "self-read").increment(1);
        Ok(Placed {
            order,
            replayed: published.duplicate,
            durability: Durability::Accepted,
        })
    }

    /// The projected order, if the projector wrote it already. The request
    /// path may read the database but never needs it: if it is down, the
    /// check is skipped.
    async fn projected(&self, order_id: Uuid) -> Option<Order> {
        let lookup = async {
            let mut conn = self.deps.pool.acquire().await?;
            db::orders::find(&mut conn, order_id).await
        };
        match lookup.await {
            Ok(order) => order,
            Err(error) => {
                tracing::warn!(%error, "cannot look up a replayed order; publishing anyway");
                None
            }
        }
    }

    async fn publish(
        &self,
        order: &Order,
        key: Option<&IdempotencyKey>,
        attempt: u32,
    ) -> Result<Published, PlaceError> {
        let event_id = match key {
            Some(key) => {
                let name = format!("event:{}#{attempt}", key.as_str());
                Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
            }
            None => Uuid::now_v7(),
        };
        if self.deps.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(PlaceError::Unavailable);
        }
        let event = Envelope::new(event_id, order.created_at, order.placed_event());
        let timeout = self.settings.publish_timeout;
        let accept_by = Utc::now() + timeout + CLOCK_SKEW_ALLOWANCE;
        let publish = async {
            jetstream::send_with_deadline(
                &self.deps.jetstream,
                self.deps.names.order_placed_subject(),
                event_id,
                event.to_bytes(),
                accept_by,
            )
            .await?
            .confirmed()
            .await
        };
        match tokio::time::timeout(timeout, publish).await {
            Ok(Ok(published)) => Ok(published),
            Ok(Err(error)) => {
                tracing::warn!(%error, "publish failed");
                Err(PlaceError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(%event_id, ?timeout, "no PubAck in time");
                Err(PlaceError::Unavailable)
            }
        }
    }

    /// Whether the message at `sequence` — the original of a duplicate —
    /// was stored after its deadline, and so was ignored by every consumer.
    async fn landed_too_late(&self, sequence: u64) -> Result<bool, PlaceError> {
        let stream = self
            .deps
            .jetstream
            .get_stream(self.deps.names.stream())
            .await
            .context("looking up the order stream")?;
        let original = stream
            .get_raw_message(sequence)
            .await
            .context("reading the original of a duplicate publish")?;
        Ok(stored_too_late(
            Some(&original.headers),
            stored_at(original.time.unix_timestamp_nanos()),
        ))
    }

    pub fn projector(&self) -> service_kit::consumer::EventConsumer<projector::Projection> {
        projector::consumer(&self.deps, &self.settings)
    }
}
