//! The projector: order-service consuming its own events to write its
//! order history. The loop is `service_kit::consumer`; a batch of events is
//! applied in one transaction, acked after COMMIT. The transaction first
//! locks each order of the batch ([`sql::lock_orders`]), so two instances
//! never apply one order's events at once; then it records each event in
//! the inbox and applies it:
//! - an `OrderPlaced` inserts its order unless it exists (a retry under
//!   another event id), already cancelled if its cancellation came first;
//! - an `OrderCancelled` cancels its order if it is placed (once: a second
//!   cancellation under another event id changes nothing); one whose order
//!   is not in the history yet waits for it, never applied to nothing and
//!   never dropped.
//!
//! The transaction also notifies the ids it inserted, which PostgreSQL
//! delivers at COMMIT to the `?wait` readers.

use anyhow::Context as _;
use service_kit::consumer::{Applied, Apply, EventConsumer, caught_up};
use shared_events::OrderEvent;
use sqlx::{PgConnection, PgPool};

use super::Args;
use super::sql::{self, Cancelled};
use crate::domain::{Cancellation, Order};
use crate::patterns::Deps;

pub struct Projection {
    pool: PgPool,
}

impl Apply for Projection {
    type Item = OrderEvent;

    const IDEMPOTENCY_KEYS: &'static [&'static str] = &[
        "processed_events_pkey",
        "orders_pkey",
        "order_lines_pkey",
        "cancellations_awaiting_order_pkey",
    ];

    fn prepare(&self, event: OrderEvent, _stream_sequence: u64) -> anyhow::Result<Self::Item> {
        // What this service would refuse is never written to its history.
        match &event {
            OrderEvent::Placed(placed) => {
                Order::from_event(&placed.payload)?;
            }
            OrderEvent::Cancelled(cancelled) => {
                Cancellation::from_event(&cancelled.payload)?;
            }
        }
        Ok(event)
    }

    async fn apply_batch(&self, events: Vec<Self::Item>) -> anyhow::Result<Vec<Applied>> {
        project(&self.pool, events).await
    }
}

/// Applies `events` to the order history in one transaction, each once (by
/// its event id), after locking each of their orders.
pub async fn project(pool: &PgPool, events: Vec<OrderEvent>) -> anyhow::Result<Vec<Applied>> {
    let mut tx = pool
        .begin()
        .await
        .context("beginning the projection transaction")?;
    let outcomes = apply(&mut tx, &events).await?;
    tx.commit().await.context("committing the projection")?;
    Ok(outcomes)
}

/// [`project`] inside the caller's transaction, which holds the orders'
/// locks until it ends.
async fn apply(tx: &mut PgConnection, events: &[OrderEvent]) -> anyhow::Result<Vec<Applied>> {
    // Before any write, and for the whole transaction: whatever another
    // instance applies to these orders, it applies before or after this.
    sql::lock_orders(&mut *tx, events.iter().map(OrderEvent::order_id))
        .await
        .context("locking the orders")?;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut projected = Vec::with_capacity(events.len());
    for event in events {
        let new_event = sql::record(&mut *tx, event.event_id())
            .await
            .context("recording the event")?;
        let applied = new_event
            && match event {
                OrderEvent::Placed(placed) => {
                    let order = Order::from_event(&placed.payload)?;
                    let inserted = sql::insert_order(&mut *tx, &order)
                        .await
                        .context("inserting the order")?;
                    if inserted {
                        projected.push(order.id);
                    }
                    inserted
                }
                OrderEvent::Cancelled(cancelled) => {
                    let cancellation = Cancellation::from_event(&cancelled.payload)?;
                    let done = sql::cancel(
                        &mut *tx,
                        cancelled.payload.order_id,
                        cancelled.event_id,
                        &cancellation,
                    )
                    .await
                    .context("cancelling the order")?;
                    done != Cancelled::Before
                }
            };
        outcomes.push(if applied {
            Applied::New
        } else {
            Applied::Duplicate
        });
    }
    // Delivered by PostgreSQL at COMMIT, and only then: wakes the
    // `GET /orders/{id}?wait=` readers of these orders.
    sql::announce(tx, &projected)
        .await
        .context("announcing the projected orders")?;
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SubsecRound as _, Utc};
    use shared_events::{
        Envelope, OrderCancelled, OrderPlaced, OrderPlacedLine, cancelled_event_id, placed_event_id,
    };
    use uuid::Uuid;

    use super::*;
    use crate::db::orders::tests::sessions_waiting;
    use crate::domain::OrderStatus;

    fn placed(order_id: Uuid) -> OrderEvent {
        let event = OrderPlaced {
            order_id,
            customer_id: "ivy".into(),
            currency: "EUR".into(),
            total_minor: 500,
            lines: vec![OrderPlacedLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 250,
            }],
            placed_at: Utc::now().trunc_subsecs(6),
        };
        OrderEvent::Placed(Envelope::new(
            placed_event_id(order_id),
            event.placed_at,
            event,
        ))
    }

    /// The cancellation of `order_id` at `at`, under `event_id`.
    fn cancelled(order_id: Uuid, event_id: Uuid, at: DateTime<Utc>, reason: &str) -> OrderEvent {
        let event = OrderCancelled {
            order_id,
            customer_id: "ivy".into(),
            currency: "EUR".into(),
            total_minor: 500,
            cancelled_at: at,
            reason: Some(reason.into()),
        };
        OrderEvent::Cancelled(Envelope::new(event_id, at, event))
    }

    /// A time PostgreSQL stores as it is, `seconds` from now.
    fn at(seconds: i64) -> DateTime<Utc> {
        (Utc::now() + chrono::Duration::seconds(seconds)).trunc_subsecs(6)
    }

    /// The order's status, when it was cancelled and why, if it is there.
    async fn status(
        pool: &PgPool,
        id: Uuid,
    ) -> sqlx::Result<Option<(String, Option<DateTime<Utc>>, Option<String>)>> {
        sqlx::query_as("SELECT status, cancelled_at, cancel_reason FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
    }

    async fn awaiting(pool: &PgPool) -> sqlx::Result<i64> {
        let mut conn = pool.acquire().await?;
        crate::db::backlog::cancellations_awaiting_order(&mut conn).await
    }

    #[sqlx::test]
    async fn a_cancellation_after_its_order_cancels_it_once(pool: PgPool) -> anyhow::Result<()> {
        let id = Uuid::now_v7();
        let first = cancelled(id, cancelled_event_id(id), at(0), "changed my mind");
        assert_eq!(project(&pool, vec![placed(id)]).await?, [Applied::New]);
        assert_eq!(project(&pool, vec![first.clone()]).await?, [Applied::New]);
        let expected = Some((
            "cancelled".to_owned(),
            Some(at_of(&first)),
            Some("changed my mind".to_owned()),
        ));
        assert_eq!(status(&pool, id).await?, expected);

        // The same event redelivered, and the order cancelled again under
        // another event id, later and for another reason: nothing changes.
        let again = cancelled(id, Uuid::now_v7(), at(60), "twice");
        assert_eq!(
            project(&pool, vec![first, again]).await?,
            [Applied::Duplicate, Applied::Duplicate]
        );
        assert_eq!(status(&pool, id).await?, expected);
        assert_eq!(awaiting(&pool).await?, 0);
        let order = crate::db::orders::find(&mut *pool.acquire().await?, id)
            .await?
            .expect("the order");
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(order.total_minor, 500);
        Ok(())
    }

    #[sqlx::test]
    async fn a_cancellation_before_its_order_waits_and_the_order_arrives_cancelled(
        pool: PgPool,
    ) -> anyhow::Result<()> {
        let (id, in_one_batch) = (Uuid::now_v7(), Uuid::now_v7());
        let early = cancelled(id, cancelled_event_id(id), at(0), "too slow");
        assert_eq!(project(&pool, vec![early.clone()]).await?, [Applied::New]);
        assert_eq!(status(&pool, id).await?, None, "never applied to nothing");
        assert_eq!(awaiting(&pool).await?, 1);
        // A redelivery, and another event id, find it waiting already.
        let again = cancelled(id, Uuid::now_v7(), at(60), "twice");
        assert_eq!(
            project(&pool, vec![early.clone(), again]).await?,
            [Applied::Duplicate, Applied::Duplicate]
        );

        assert_eq!(project(&pool, vec![placed(id)]).await?, [Applied::New]);
        let expected = Some((
            "cancelled".to_owned(),
            Some(at_of(&early)),
            Some("too slow".to_owned()),
        ));
        assert_eq!(status(&pool, id).await?, expected);
        assert_eq!(awaiting(&pool).await?, 0);
        let order = crate::db::orders::find(&mut *pool.acquire().await?, id)
            .await?
            .expect("the order");
        assert_eq!(order.lines.len(), 1);

        // Both in one batch, the cancellation first.
        let outcomes = project(
            &pool,
            vec![
                cancelled(
                    in_one_batch,
                    cancelled_event_id(in_one_batch),
                    at(0),
                    "batch",
                ),
                placed(in_one_batch),
            ],
        )
        .await?;
        assert_eq!(outcomes, [Applied::New, Applied::New]);
        let found = status(&pool, in_one_batch)
            .await?
            .map(|(status, ..)| status);
        assert_eq!(found.as_deref(), Some("cancelled"));
        assert_eq!(awaiting(&pool).await?, 0);

        // An order written meanwhile by another path than the projector's
        // (another mode's, before a switch) is cancelled by the placement
        // that finds it there.
        let elsewhere = Uuid::now_v7();
        let waiting = cancelled(elsewhere, cancelled_event_id(elsewhere), at(0), "elsewhere");
        assert_eq!(project(&pool, vec![waiting]).await?, [Applied::New]);
        sqlx::query(
            "INSERT INTO orders (id, customer_id, currency, total_minor) VALUES ($1, 'ivy', 'EUR', 500)",
        )
        .bind(elsewhere)
        .execute(&pool)
        .await?;
        assert_eq!(
            project(&pool, vec![placed(elsewhere)]).await?,
            [Applied::Duplicate]
        );
        let found = status(&pool, elsewhere).await?.map(|(status, ..)| status);
        assert_eq!(found.as_deref(), Some("cancelled"));
        assert_eq!(awaiting(&pool).await?, 0);
        Ok(())
    }

    /// One transaction applies an order's first event and stays open; a
    /// second applies the other event of the same order meanwhile, and
    /// waits for the first (it is seen waiting on its lock before the first
    /// commits). In either order, the order ends cancelled, and nothing
    /// waits. Unserialised, each would miss the other's uncommitted row.
    #[sqlx::test]
    async fn two_transactions_applying_an_orders_two_events_at_once_end_cancelled(
        pool: PgPool,
    ) -> anyhow::Result<()> {
        for cancellation_first in [true, false] {
            let id = Uuid::now_v7();
            let cancellation = cancelled(id, cancelled_event_id(id), at(0), "race");
            let (first, second) = if cancellation_first {
                (cancellation, placed(id))
            } else {
                (placed(id), cancellation)
            };
            let mut open = pool.begin().await?;
            assert_eq!(apply(&mut open, &[first]).await?, [Applied::New]);
            {
                let racing = project(&pool, vec![second]);
                tokio::pin!(racing);
                tokio::select! {
                    finished = &mut racing => panic!("the second transaction did not wait: {finished:?}"),
                    () = sessions_waiting(&pool, 1) => {}
                }
                open.commit().await?;
                assert_eq!(racing.await?, [Applied::New]);
            }
            let found = status(&pool, id).await?.map(|(status, ..)| status);
            assert_eq!(
                found.as_deref(),
                Some("cancelled"),
                "cancellation first: {cancellation_first}"
            );
            assert_eq!(awaiting(&pool).await?, 0);
        }
        Ok(())
    }

    fn at_of(event: &OrderEvent) -> DateTime<Utc> {
        match event {
            OrderEvent::Cancelled(event) => event.payload.cancelled_at,
            OrderEvent::Placed(event) => event.payload.placed_at,
        }
    }
}
