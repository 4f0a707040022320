//! The projector: order-service consuming its own `OrderPlaced` to write its
//! order history. The loop is `service_kit::consumer`; a batch of events is
//! applied in one transaction that records each event in the inbox and
//! inserts its order unless it exists (a retry under another event id), and
//! acked after COMMIT. The transaction also notifies the ids it inserted,
//! which PostgreSQL delivers at COMMIT to the `?wait` readers.

use anyhow::Context as _;
use service_kit::consumer::{Applied, Apply, EventConsumer, caught_up};
use shared_events::{Envelope, OrderEvent, OrderPlaced};
use sqlx::PgPool;

use super::{Args, sql};
use crate::db;
use crate::domain::Order;
use crate::patterns::Deps;

pub struct Projection {
    pool: PgPool,
}

impl Apply for Projection {
    type Item = Envelope<OrderPlaced>;

    const IDEMPOTENCY_KEYS: &'static [&'static str] =
        &["processed_events_pkey", "orders_pkey", "order_lines_pkey"];

    fn prepare(&self, event: OrderEvent, _stream_sequence: u64) -> anyhow::Result<Self::Item> {
        let OrderEvent::Placed(event) = event else {
            anyhow::bail!("the order history does not apply OrderCancelled yet");
        };
        // An order this service would refuse is never written to its history.
        Order::from_event(&event.payload)?;
        Ok(event)
    }

    async fn apply_batch(&self, events: Vec<Self::Item>) -> anyhow::Result<Vec<Applied>> {
        project(&self.pool, events).await
    }
}

/// Applies `events` to the order history in one transaction: records each
/// in the inbox and inserts its order unless it exists.
pub async fn project(
    pool: &PgPool,
    events: Vec<Envelope<OrderPlaced>>,
) -> anyhow::Result<Vec<Applied>> {
    let mut tx = pool
        .begin()
        .await
        .context("beginning the projection transaction")?;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut projected = Vec::with_capacity(events.len());
    for event in &events {
        let new_event = sql::record(&mut tx, event.event_id)
            .await
            .context("recording the event")?;
        let inserted = new_event
            && db::orders::insert_if_absent(&mut tx, &Order::from_event(&event.payload)?)
                .await
                .context("inserting the order")?;
        if inserted {
            projected.push(event.payload.order_id);
        }
        outcomes.push(if inserted {
            Applied::New
        } else {
            Applied::Duplicate
        });
    }
    // Delivered by PostgreSQL at COMMIT, and only then: wakes the
    // `GET /orders/{id}?wait=` readers of these orders.
    sql::announce(&mut tx, &projected)
        .await
        .context("announcing the projected orders")?;
    tx.commit().await.context("committing the projection")?;
    Ok(outcomes)
}

pub fn consumer(deps: &Deps, settings: &Args) -> EventConsumer<Projection> {
    EventConsumer::new(
        deps.jetstream.clone(),
        deps.names.clone(),
        settings.projector.settings(
            deps.names.projector_consumer(),
            "projector_after_commit_before_ack",
            "projector_apply_fails",
        ),
        Projection {
            pool: deps.pool.clone(),
        },
    )
}

/// Runs the projector until its durable consumer (`consumer`) has applied
/// everything in the stream, within the start-up deadline: what leaving
/// self-read must do first.
pub async fn catch_up(
    deps: &Deps,
    settings: &Args,
    consumer: &mut async_nats::jetstream::consumer::PullConsumer,
) -> anyhow::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(self::consumer(deps, settings).run(stop.child_token()));
    let result = async {
        loop {
            if caught_up(consumer.info().await?) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deps.startup_deadline,
                "the self-read projector still has events to apply (some may wait for \
                 CONSUMER_ACK_WAIT after a crash): start again, or run self-read until it \
                 has caught up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    .await;
    stop.cancel();
    let _ = running.await;
    result
}
