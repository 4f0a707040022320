//! The loop every idempotent consumer of `OrderPlaced` runs; a service plugs
//! in only what applying one event means to its database ([`Apply`]).
//!
//! Messages are taken in batches of whatever has arrived (up to a limit).
//! Per message: decode; ignore it if it was stored after its producer's
//! deadline; check it. Then the batch is applied in ONE transaction (the
//! service's own dedup keys make each event idempotent), and every message is
//! acked only after COMMIT — one fsync for the batch instead of one per
//! message. An event that can never be applied goes to the dead-letter
//! stream with the reason in headers and is terminated; a transient failure
//! naks the batch with a growing delay. Lost connections and vanished
//! consumers are retried.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt as _;
use shared_events::jetstream::{
    DeadLetter, ensure_consumer, publish_dead_letter, stored_at, stored_too_late,
};
use shared_events::{Envelope, Names, OrderPlaced};
use tokio_util::sync::CancellationToken;

use crate::crash::crash_point;

const MAX_NAK_DELAY: Duration = Duration::from_secs(10);

/// What applying an event did to the consumer's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The effect happened now.
    New,
    /// The event, or its order under another event id, was applied before;
    /// nothing changed.
    Duplicate,
}

/// What a consumer does with valid events: checked one by one, then applied
/// in batches — one transaction per batch, committed when the future
/// completes, idempotent per event.
pub trait Apply: Send + Sync + 'static {
    /// An event checked and ready to apply.
    type Item: Send + 'static;

    /// Checks one event; an `Err` means it can never be applied (it is
    /// dead-lettered with that reason).
    fn prepare(
        &self,
        event: Envelope<OrderPlaced>,
        stream_sequence: u64,
    ) -> Result<Self::Item, String>;

    /// Applies `items` in one transaction; one outcome per item, in order.
    /// An error is transient: every message of the batch is retried.
    fn apply_batch(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = anyhow::Result<Vec<Applied>>> + Send;
}

/// How a consumer is set up.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable consumer name; also the label of its metrics.
    pub durable: &'static str,
    /// Most messages applied in one transaction; a batch is whatever has
    /// arrived, so under light load it is one message and adds no latency.
    pub batch: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Crash point between COMMIT and ack.
    pub crash_point: &'static str,
}

/// Where a message of a batch goes.
enum Sorted<T> {
    Apply(T),
    TooLate,
    DeadLetter(u64, String),
    Unreadable(anyhow::Error),
}

pub struct EventConsumer<A> {
    jetstream: async_nats::jetstream::Context,
    names: Names,
    settings: ConsumerSettings,
    apply: A,
}

impl<A: Apply> EventConsumer<A> {
    pub fn new(
        jetstream: async_nats::jetstream::Context,
        names: Names,
        settings: ConsumerSettings,
        apply: A,
    ) -> Self {
        Self {
            jetstream,
            names,
            settings,
            apply,
        }
    }

    /// Creates the durable pull consumer if needed.
    pub async fn ensure(&self) -> anyhow::Result<PullConsumer> {
        Ok(ensure_consumer(
            &self.jetstream,
            self.names.stream(),
            self.settings.durable,
            self.names.order_placed_subject(),
            self.settings.ack_wait,
        )
        .await?)
    }

    /// Consumes until `shutdown` is cancelled; messages in hand are finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(consumer = self.settings.durable, error = format!("{error:#}"), retry_in = ?pause, "consumer stopped");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!(consumer = self.settings.durable, "consumer stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let consumer = self.ensure().await?;
        let messages = consumer
            .messages()
            .await
            .context("subscribing to messages")?;
        tracing::info!(consumer = self.settings.durable, "consuming");
        let batches = messages
            .take_until(shutdown.cancelled())
            .ready_chunks(self.settings.batch.max(1));
        tokio::pin!(batches);
        while let Some(batch) = batches.next().await {
            let messages = batch
                .into_iter()
                .filter_map(|message| {
                    message
                        .inspect_err(|error| tracing::warn!(%error, "pulling messages failed"))
                        .ok()
                })
                .collect();
            self.handle(messages).await;
        }
        Ok(())
    }

    /// Sorts a batch into what is ignored, dead-lettered or applied; applies
    /// the rest in one transaction; acks after COMMIT, or naks on failure.
    async fn handle(&self, messages: Vec<Message>) {
        let consumer = self.settings.durable;
        let mut items = Vec::with_capacity(messages.len());
        let mut applicable = Vec::with_capacity(messages.len());
        let mut done = Vec::new();
        for message in messages {
            match self.sort(&message) {
                Sorted::Apply(item) => {
                    items.push(item);
                    applicable.push(message);
                }
                Sorted::TooLate => done.push((message, "too_late")),
                Sorted::DeadLetter(sequence, reason) => {
                    match self.dead_letter(&message, sequence, &reason).await {
                        Ok(()) => count(consumer, "dead_lettered", 1),
                        Err(error) => nak(consumer, &message, &error).await,
                    }
                }
                Sorted::Unreadable(error) => nak(consumer, &message, &error).await,
            }
        }
        if !items.is_empty() {
            match self.apply.apply_batch(items).await {
                Ok(outcomes) => {
                    if outcomes.contains(&Applied::New) {
                        crash_point(self.settings.crash_point);
                    }
                    for (message, outcome) in applicable.into_iter().zip(outcomes) {
                        let label = match outcome {
                            Applied::New => "applied",
                            Applied::Duplicate => "duplicate",
                        };
                        done.push((message, label));
                    }
                }
                Err(error) => {
                    for message in &applicable {
                        nak(consumer, message, &error).await;
                    }
                }
            }
        }
        let acks = done.iter().map(|(message, label)| async move {
            count(consumer, label, 1);
            if let Err(error) = message.ack().await {
                // It will be redelivered and found a duplicate.
                tracing::warn!(consumer, %error, "ack failed");
            }
        });
        futures::future::join_all(acks).await;
    }

    fn sort(&self, message: &Message) -> Sorted<A::Item> {
        let info = match message.info() {
            Ok(info) => info,
            Err(error) => {
                return Sorted::Unreadable(anyhow::anyhow!("reading message metadata: {error}"));
            }
        };
        let sequence = info.stream_sequence;
        if stored_too_late(
            message.headers.as_ref(),
            stored_at(info.published.unix_timestamp_nanos()),
        ) {
            tracing::warn!(sequence, "ignoring an event stored after its deadline");
            return Sorted::TooLate;
        }
        let event = match Envelope::<OrderPlaced>::decode(&message.payload) {
            Ok(event) => event,
            Err(error) => return Sorted::DeadLetter(sequence, error.to_string()),
        };
        match self.apply.prepare(event, sequence) {
            Ok(item) => Sorted::Apply(item),
            Err(reason) => Sorted::DeadLetter(sequence, reason),
        }
    }

    async fn dead_letter(
        &self,
        message: &Message,
        sequence: u64,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(
            sequence,
            reason,
            "dead-lettering an event that cannot be applied"
        );
        let letter = DeadLetter {
            consumer: self.settings.durable,
            reason,
            original_subject: message.subject.as_str(),
            original_stream_sequence: sequence,
        };
        publish_dead_letter(
            &self.jetstream,
            &self.names,
            &letter,
            message.payload.to_vec(),
        )
        .await
        .context("publishing to the dead-letter stream")?;
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| anyhow::anyhow!("terminating a dead-lettered message: {e}"))
    }
}

fn count(consumer: &'static str, outcome: &'static str, n: u64) {
    metrics::counter!("events_consumed_total", "consumer" => consumer, "outcome" => outcome)
        .increment(n);
}

/// Asks for redelivery after a delay that grows with each attempt.
async fn nak(consumer: &'static str, message: &Message, error: &anyhow::Error) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let delay = nak_delay(delivered);
    count(consumer, "retried", 1);
    tracing::warn!(consumer, error = format!("{error:#}"), delivered, retry_in = ?delay, "processing failed; will retry");
    if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(consumer, %error, "nak failed; redelivery after the ack wait");
    }
}

/// 200 ms doubled per delivery, capped.
fn nak_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 8) - 1).unwrap_or(0);
    (Duration::from_millis(200) * 2_u32.pow(exponent)).min(MAX_NAK_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_grows_and_is_capped() {
        assert_eq!(nak_delay(1), Duration::from_millis(200));
        assert_eq!(nak_delay(2), Duration::from_millis(400));
        assert_eq!(nak_delay(50), MAX_NAK_DELAY);
    }
}
