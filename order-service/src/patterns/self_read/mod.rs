//! `self-read`: publish first, then read your own event.
//!
//! Write path: `POST /orders` validates, publishes `OrderPlaced` and awaits
//! the PubAck, then answers 202 Accepted. Nothing is written to the order
//! database on the request path; the [`projector`] — a durable consumer like
//! any other — writes the order history from the event, as rewards-service
//! credits points from the same event. The stream is the source of truth.
//!
//! Each answer means exactly one thing:
//! - **202**: the broker stored the event; both services will apply it.
//! - **503** + `Retry-After`: nothing was sent (no connection to NATS) and
//!   the request came without a key, so this order will never appear. With
//!   the client's key, an earlier request under it may have been stored:
//!   that is 504.
//! - **504** `outcome_unknown`: the event was sent, but no PubAck came back,
//!   not even for a second send under the same message id. It may or may
//!   not have been stored. The answer carries the `Idempotency-Key` to retry
//!   with (the client's, or one made for it); a retry resolves to the
//!   original outcome.
//! - **422** `idempotency_key_reused`: the key already stands for an order
//!   with other content.
//!
//! How: every request has a key, and the order id derives from the customer
//! and the key (as in every mode), the event id from the order id. A retry therefore publishes
//! the same message id, which the broker stores at most once, and answers a
//! duplicate with the sequence of the stored original. The original is read
//! back and compared with the request: the same content is the same order,
//! replayed; other content under the same key is refused — so the key is
//! bound to the content in the stream itself, even when two requests race
//! before the projector ran. No rule compares two hosts' clocks.
//!
//! Read your write: a 202 comes before the order is in the history, so
//! `GET /orders/{id}?wait=` waits for it. The projector notifies the ids
//! it stored in its own transaction, and one `LISTEN` per process wakes the
//! readers of exactly those ids ([`announcements`]).
//!
//! Limits: the broker recognises a retry within its duplicate window
//! (`DUPLICATE_WINDOW`); after that, the order database answers it (it is
//! checked first, by the rule every mode follows, so a key used in another
//! mode before a switch answers its order here), and the consumers' inboxes
//! drop a re-publish. The request path never waits long on the order
//! database ([`DATABASE_BUDGET`]): with PostgreSQL down, a retry within the
//! window is answered from the broker alone. A replay
//! also projects the original on the request path, so the order can be read
//! at once even when the projector's copy waits on a dead process's ack
//! timeout; the projector stays the guarantee (its inbox makes the second
//! application a no-op).

mod announcements;
pub mod projector;
mod sql;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{SubsecRound as _, Utc};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use service_kit::duration;
use service_kit::startup::retry_until;
use shared_events::jetstream::{self, PublishError};
use shared_events::{Envelope, OrderEvent, OrderPlaced, Published, placed_event_id};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Deps, Mode, Outcome, Pattern, PatternArgs, PlaceError, Placed, Placement};
use super::{Started, Target, Watch, WritePath};
use crate::db;
use crate::domain::{IdempotencyKey, NewOrder, Order};
use announcements::Announcements;
use service_kit::crash::crash_point;

type AckFuture = Pin<Box<dyn Future<Output = Result<Published, PublishError>> + Send>>;

/// Self-read's settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "self_read")]
#[command(next_help_heading = "Self-read")]
pub struct Args {
    /// How long `POST /orders` waits for the PubAck. A publish still
    /// unanswered then is sent again under the same message id and waited
    /// for as long once more; with no answer still, the outcome is unknown
    /// (504: retry with the same Idempotency-Key).
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "2s", value_parser = duration::parse)]
    pub publish_timeout: Duration,
    /// The projector: a durable consumer like rewards-service's.
    #[command(flatten)]
    pub projector: service_kit::consumer::ConsumerArgs,
}

pub struct SelfRead;

impl Pattern for SelfRead {
    fn mode(&self) -> Mode {
        Mode::SelfRead
    }

    /// The write path; the worker runs the projector, and the `LISTEN` that
    /// tells `?wait` readers which orders it stored.
    fn start<'a>(
        &'a self,
        deps: Deps,
        args: &'a PatternArgs,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Started>> {
        Box::pin(async move {
            let announcements = Announcements::default();
            let listener = retry_until(
                deps.startup_deadline,
                "listening for projected orders",
                || announcements.listen(&deps.database_url),
            )
            .await?;
            let projector = projector::consumer(&deps, &args.self_read);
            let worker = async move {
                futures::join!(projector.run(shutdown.clone()), listener.run(shutdown));
                Ok(())
            };
            let write = Writes {
                deps,
                publish_timeout: args.self_read.publish_timeout,
                announcements,
            };
            Ok(Started {
                write: Box::new(write),
                worker: Some(worker.boxed()),
            })
        })
    }

    /// Leaving self-read, the projector applies what is left in the stream
    /// (a 202 answered just before the switch still reaches the order
    /// history); the switch then removes its durable consumer.
    fn leave<'a>(
        &'a self,
        deps: &'a Deps,
        args: &'a PatternArgs,
        next: &'a Target,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if next.fence == Mode::SelfRead.name() {
                return Ok(());
            }
            let durable = deps.names.projector_consumer();
            let found =
                service_kit::consumer::find_durable(&deps.jetstream, deps.names.stream(), durable);
            let Some(mut consumer) = found.await? else {
                return Ok(());
            };
            if !service_kit::consumer::caught_up(consumer.info().await?) {
                tracing::info!("applying what the self-read projector has left before switching");
                projector::catch_up(deps, &args.self_read, &mut consumer).await?;
            }
            Ok(())
        })
    }
}

struct Writes {
    deps: Deps,
    publish_timeout: Duration,
    announcements: Announcements,
}

impl WritePath for Writes {
    fn place(&self, placement: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>> {
        Box::pin(self.publish_first(placement))
    }

    fn places_through_broker(&self) -> bool {
        true
    }

    fn watch(&self, id: Uuid) -> Option<Box<dyn Watch>> {
        Some(Box::new(self.announcements.watch(id)))
    }
}

impl Writes {
    async fn publish_first(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order_id = placement.order_id();
        if placement.client_key
            && let Some(existing) = self.earlier_order(&placement).await
        {
            return replay(existing, &placement.order);
        }
        let Placement {
            order: new,
            key,
            client_key,
        } = placement;

        // Microseconds, as PostgreSQL keeps them: the projected order must
        // read back exactly as answered.
        let order = Order::new(order_id, &new, Utc::now().trunc_subsecs(6));
        let mut event = Envelope::new(
            placed_event_id(order_id),
            order.created_at,
            order.placed_event(),
        );
        event.traceparent = service_kit::trace::current_traceparent();
        let span = service_kit::trace::publish_span(
            &self.deps.names.order_placed_subject(),
            event.event_id,
        );
        let published = self
            .publish(&event, &key)
            .instrument(span)
            .await
            .map_err(|error| match error {
                // Certain that this request stored nothing — but an earlier
                // request under the client's key may have, so only a request
                // without one may hear "not placed".
                PlaceError::Unavailable if client_key => PlaceError::Unknown { key: key.clone() },
                other => other,
            })?;
        let duplicate = u64::from(published.duplicate);
        service_kit::meters::published("self-read", 1 - duplicate, duplicate);
        if published.duplicate {
            let original = self
                .original(published.stream_sequence)
                .await
                .map_err(|error| {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "cannot read the original of a duplicate"
                    );
                    PlaceError::Unknown { key: key.clone() }
                })?;
            // Our own first send, answered late, is not a replay.
            if original != event {
                let stored = Order::from_event(&original.payload).context("the stored original")?;
                let placed = replay(stored, &new)?;
                self.project(original).await;
                return Ok(placed);
            }
        }
        crash_point("self_read_after_publish");
        Ok(Placed::accepted(order, Outcome::New))
    }

    /// The order the key placed before, if the order database has it
    /// (projected, or placed in another mode before a switch). The request
    /// path may read the database but never needs it: if it is down or
    /// slow, the check is skipped after [`DATABASE_BUDGET`] (the broker's
    /// duplicate answer still binds the key).
    async fn earlier_order(&self, placement: &Placement) -> Option<Order> {
        let lookup = async {
            let mut conn = self.deps.pool.acquire().await?;
            let Some(id) =
                db::idempotency::order_of(&mut conn, placement.order.customer_id(), &placement.key)
                    .await?
            else {
                return Ok(None);
            };
            db::orders::find(&mut conn, id).await
        };
        match tokio::time::timeout(DATABASE_BUDGET, lookup).await {
            Ok(Ok(order)) => order,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot look up a replayed order; publishing anyway");
                None
            }
            Err(_) => {
                tracing::warn!(
                    budget = ?DATABASE_BUDGET,
                    "the order database did not answer a key lookup in time; publishing anyway"
                );
                None
            }
        }
    }

    /// Publishes `event` and waits for the broker's answer. Without a PubAck
    /// in time, sends it again under the same message id — the broker stores
    /// it at most once and answers for it — and takes whichever answer comes
    /// first. Only a publish that was never sent is `Unavailable`.
    async fn publish(
        &self,
        event: &Envelope<OrderPlaced>,
        key: &IdempotencyKey,
    ) -> Result<Published, PlaceError> {
        // The client would buffer a publish while disconnected and send it
        // after reconnecting: refuse instead, certain that nothing was sent.
        if self.deps.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(PlaceError::Unavailable);
        }
        let unknown = || PlaceError::Unknown { key: key.clone() };
        let timeout = self.publish_timeout;
        let payload = event.to_bytes();
        let mut first: AckFuture =
            Box::pin(self.send(event.event_id, &payload).await.map_err(|error| {
                tracing::warn!(%error, "publish not sent");
                PlaceError::Unavailable
            })?);
        let mut waiting = Vec::with_capacity(2);
        match tokio::time::timeout(timeout, &mut first).await {
            Ok(Ok(published)) => return Ok(published),
            Ok(Err(error)) => tracing::warn!(%error, "no PubAck; sending again"),
            Err(_) => {
                tracing::warn!(event_id = %event.event_id, ?timeout, "no PubAck in time; sending again");
                waiting.push(first);
            }
        }
        let resent = self.send(event.event_id, &payload).await.map_err(|error| {
            tracing::warn!(%error, "second send failed; outcome unknown");
            unknown()
        })?;
        waiting.push(Box::pin(resent));
        match tokio::time::timeout(timeout, futures::future::select_ok(waiting)).await {
            Ok(Ok((published, _))) => Ok(published),
            Ok(Err(error)) => {
                tracing::warn!(%error, "no PubAck for either send; outcome unknown");
                Err(unknown())
            }
            Err(_) => {
                tracing::warn!(event_id = %event.event_id, "no PubAck for either send; outcome unknown");
                Err(unknown())
            }
        }
    }

    /// Sends the event's bytes under its id, in the trace of the current
    /// (publish) span; the returned future is its PubAck.
    async fn send(
        &self,
        event_id: Uuid,
        payload: &[u8],
    ) -> Result<impl Future<Output = Result<Published, PublishError>> + Send + 'static, PublishError>
    {
        let pending = jetstream::send(
            &self.deps.jetstream,
            self.deps.names.order_placed_subject(),
            event_id,
            service_kit::trace::current_traceparent().as_deref(),
            payload.to_vec(),
        )
        .await?;
        Ok(pending.confirmed())
    }

    /// The stored event at `sequence`: the original of a duplicate publish.
    async fn original(&self, sequence: u64) -> anyhow::Result<Envelope<OrderPlaced>> {
        let stream = self
            .deps
            .jetstream
            .get_stream_no_info(self.deps.names.stream())
            .await
            .context("looking up the order stream")?;
        let original = stream
            .get_raw_message(sequence)
            .await
            .context("reading the original of a duplicate publish")?;
        Ok(Envelope::decode(&original.payload)?)
    }

    /// Writes a replayed order's projection now, so that the client can read
    /// it at once; if this fails, the projector still will.
    async fn project(&self, event: Envelope<OrderPlaced>) {
        let projected = tokio::time::timeout(
            DATABASE_BUDGET,
            projector::project(&self.deps.pool, vec![OrderEvent::Placed(event)]),
        );
        match projected.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(
                error = format!("{error:#}"),
                "projecting a replayed order on the request path failed; the projector will"
            ),
            Err(_) => tracing::warn!(
                "the order database did not take a replayed order in time; the projector will"
            ),
        }
    }
}

/// The longest the request path waits on the order database, for a key's
/// earlier order or to project a replay: far above a healthy lookup, and
/// far below `REQUEST_TIMEOUT`, so that a database outage (whose connection
/// attempts wait out `DB_ACQUIRE_TIMEOUT`) leaves time for the broker to
/// answer.
const DATABASE_BUDGET: Duration = Duration::from_millis(500);

/// The answer to a retry whose key already placed `existing`.
fn replay(existing: Order, new: &NewOrder) -> Result<Placed, PlaceError> {
    if !existing.has_content_of(new) {
        return Err(PlaceError::KeyReused);
    }
    Ok(Placed::accepted(existing, Outcome::Replayed))
}
