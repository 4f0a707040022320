//! Cancelling placed orders on the subject-per-order stream: what it costs
//! the publisher that the broker checks each cancellation's place in its
//! order's life. Three expectations — none, the order's one subject, every
//! subject of the order — each sent two ways: pipelined single publishes
//! (as many awaiting their PubAck as the broker limit's run keeps) and
//! atomic batches, one at a time (as the outbox relay sends). Each way
//! cancels orders of its own, so that every cancellation is the order's
//! second event and its expectation holds.

use std::future::IntoFuture as _;
use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use serde::Serialize;
use shared_events::{Envelope, OrderCancelled};
use uuid::Uuid;

use super::layout::{Layout, Subjects};
use super::load::bar;
use super::wire::{self, Answer, Message};
use crate::bench::broker::WINDOW;

/// What a cancellation tells the broker about its place in the order's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// Nothing: `orders.<id>.cancelled` with its `Nats-Msg-Id` only.
    None,
    /// `Nats-Expected-Last-Subject-Sequence` = the `OrderPlaced`'s sequence,
    /// published on the subject of the `OrderPlaced`: every event of an
    /// order on one subject (`orders.<id>`, the type in the envelope).
    OrderSubject,
    /// The same expectation with `Nats-Expected-Last-Subject-Sequence-Subject:
    /// orders.<id>.>`, published on `orders.<id>.cancelled`: a subject per
    /// event type, the expectation over all of them.
    OrderSubjects,
}

/// How the cancellations are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Single publishes, [`WINDOW`] awaiting their PubAck at once.
    Pipelined,
    /// Atomic batches of the run's batch size, one awaited at a time.
    Atomic,
}

/// One way of cancelling: a row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Way {
    pub expectation: Expectation,
    pub transport: Transport,
}

impl Way {
    /// Every way, in the order a round runs them.
    pub const ALL: [Way; 6] = [
        Way::of(Expectation::None, Transport::Pipelined),
        Way::of(Expectation::OrderSubject, Transport::Pipelined),
        Way::of(Expectation::OrderSubjects, Transport::Pipelined),
        Way::of(Expectation::None, Transport::Atomic),
        Way::of(Expectation::OrderSubject, Transport::Atomic),
        Way::of(Expectation::OrderSubjects, Transport::Atomic),
    ];

    const fn of(expectation: Expectation, transport: Transport) -> Self {
        Self {
            expectation,
            transport,
        }
    }

    /// What the cancellation carries, for the report.
    pub fn expectation_label(self) -> &'static str {
        match self.expectation {
            Expectation::None => "none (`orders.<id>.cancelled`)",
            Expectation::OrderSubject => "`Expected-Last-Subject-Sequence`, on the order's subject",
            Expectation::OrderSubjects => {
                "`Expected-Last-Subject-Sequence` + `-Subject: orders.<id>.>`, on `orders.<id>.cancelled`"
            }
        }
    }

    /// How it is sent, for the report.
    pub fn transport_label(self, batch: usize) -> String {
        match self.transport {
            Transport::Pipelined => format!("single, {WINDOW} in flight"),
            Transport::Atomic => format!("atomic batches of {batch}"),
        }
    }
}

/// The cancellation of `order_id`, whose `OrderPlaced` is at stream
/// sequence `placed`, as `expectation` has it (a fresh event id).
pub(super) fn cancellation(
    subjects: &Subjects,
    expectation: Expectation,
    order_id: Uuid,
    placed: u64,
) -> Message {
    let cancelled_at = Utc::now();
    let event = OrderCancelled {
        order_id,
        customer_id: "bench".to_owned(),
        currency: "EUR".to_owned(),
        total_minor: 2_599,
        cancelled_at,
        reason: Some("customer request".to_owned()),
    };
    let envelope = Envelope::new(Uuid::now_v7(), cancelled_at, event);
    let (id, payload) = (envelope.event_id, envelope.to_bytes());
    match expectation {
        Expectation::None => Message::new(subjects.cancelled(order_id), id, payload),
        Expectation::OrderSubject => {
            Message::new(subjects.placed(Layout::PerOrder, order_id), id, payload)
                .expecting(placed, None)
        }
        Expectation::OrderSubjects => Message::new(subjects.cancelled(order_id), id, payload)
            .expecting(placed, Some(&subjects.of_order(order_id))),
    }
}

/// Cancels each of `orders` (an order and the sequence of its
/// `OrderPlaced`) `way`, in batches of `batch` where it batches; returns
/// the cancellations stored per second. Any cancellation not stored fails
/// the run: each expectation holds.
pub(super) async fn cancel(
    client: &async_nats::Client,
    subjects: &Subjects,
    way: Way,
    orders: &[(Uuid, u64)],
    batch: usize,
    label: &str,
) -> anyhow::Result<f64> {
    let bar = bar(orders.len() as u64, label);
    let message =
        |(id, placed): &(Uuid, u64)| cancellation(subjects, way.expectation, *id, *placed);
    let started = Instant::now();
    match way.transport {
        Transport::Pipelined => {
            let js = async_nats::jetstream::new(client.clone());
            let mut in_flight = FuturesOrdered::new();
            let mut orders = orders.iter();
            loop {
                while in_flight.len() < WINDOW {
                    let Some(order) = orders.next() else { break };
                    let Message {
                        subject,
                        headers,
                        payload,
                    } = message(order);
                    in_flight.push_back(
                        js.publish_with_headers(subject, headers, payload)
                            .await?
                            .into_future(),
                    );
                }
                let Some(ack) = in_flight.next().await else {
                    break;
                };
                let ack = ack.context("cancelling an order")?;
                anyhow::ensure!(!ack.duplicate, "a cancellation was taken for a duplicate");
                bar.inc(1);
            }
        }
        Transport::Atomic => {
            for chunk in orders.chunks(batch.max(1)) {
                let answer = wire::publish_atomic(client, chunk.iter().map(message).collect())
                    .await
                    .context("cancelling a batch of orders")?;
                match answer {
                    Answer::Stored { count, .. } if count == chunk.len() => {}
                    other => anyhow::bail!(
                        "a batch of {} cancellations: {}",
                        chunk.len(),
                        other.label()
                    ),
                }
                bar.inc(chunk.len() as u64);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(orders.len() as f64 / secs)
}
