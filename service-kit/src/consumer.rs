//! The loop every idempotent consumer of `OrderPlaced` runs; a service plugs
//! in only what applying one event means to its database ([`Apply`]).
//!
//! Per message: decode; ignore it if it was stored after its producer's
//! deadline; apply it (one transaction, the service's own dedup keys); ack
//! only after COMMIT. An event that can never be applied goes to the
//! dead-letter stream with the reason in headers and is terminated; a
//! transient failure is nak'ed with a growing delay. Lost connections and
//! vanished consumers are retried.

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

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// It never can be: dead-letter it.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// It may work later (database down): retry.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

/// What a consumer does with one valid event, idempotently and in one
/// transaction that has committed when the future completes.
pub trait Apply: Send + Sync + 'static {
    fn apply(
        &self,
        event: Envelope<OrderPlaced>,
        stream_sequence: u64,
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send;
}

/// How a consumer is set up.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable consumer name; also the label of its metrics.
    pub durable: &'static str,
    /// Messages processed at once.
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Crash point between COMMIT and ack.
    pub crash_point: &'static str,
}

/// What handling one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied(Applied),
    DeadLettered,
    TooLate,
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
        messages
            .take_until(shutdown.cancelled())
            .for_each_concurrent(self.settings.concurrency, |message| async move {
                match message {
                    Ok(message) => self.handle(message).await,
                    Err(error) => tracing::warn!(%error, "pulling messages failed"),
                }
            })
            .await;
        Ok(())
    }

    async fn handle(&self, message: Message) {
        let consumer = self.settings.durable;
        match self.process(&message).await {
            Ok(outcome) => {
                metrics::counter!("events_consumed_total", "consumer" => consumer, "outcome" => label(outcome))
                    .increment(1);
                if outcome != Outcome::DeadLettered {
                    if outcome == Outcome::Applied(Applied::New) {
                        crash_point(self.settings.crash_point);
                    }
                    if let Err(error) = message.ack().await {
                        // It will be redelivered and found a duplicate.
                        tracing::warn!(consumer, %error, "ack failed");
                    }
                }
            }
            Err(error) => {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                let delay = nak_delay(delivered);
                metrics::counter!("events_consumed_total", "consumer" => consumer, "outcome" => "retried")
                    .increment(1);
                tracing::warn!(consumer, error = format!("{error:#}"), delivered, retry_in = ?delay, "processing failed; will retry");
                if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(consumer, %error, "nak failed; redelivery after the ack wait");
                }
            }
        }
    }

    /// Applies the message once. An `Err` is transient: retry later.
    async fn process(&self, message: &Message) -> anyhow::Result<Outcome> {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("reading message metadata: {e}"))?;
        let sequence = info.stream_sequence;
        if stored_too_late(
            message.headers.as_ref(),
            stored_at(info.published.unix_timestamp_nanos()),
        ) {
            tracing::warn!(sequence, "ignoring an event stored after its deadline");
            return Ok(Outcome::TooLate);
        }
        let event = match Envelope::<OrderPlaced>::decode(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                return self
                    .dead_letter(message, sequence, &error.to_string())
                    .await;
            }
        };
        match self.apply.apply(event, sequence).await {
            Ok(applied) => Ok(Outcome::Applied(applied)),
            Err(ApplyError::Invalid(reason)) => self.dead_letter(message, sequence, &reason).await,
            Err(ApplyError::Transient(error)) => Err(error),
        }
    }

    async fn dead_letter(
        &self,
        message: &Message,
        sequence: u64,
        reason: &str,
    ) -> anyhow::Result<Outcome> {
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
            .map_err(|e| anyhow::anyhow!("terminating a dead-lettered message: {e}"))?;
        Ok(Outcome::DeadLettered)
    }
}

fn label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Applied(Applied::New) => "applied",
        Outcome::Applied(Applied::Duplicate) => "duplicate",
        Outcome::DeadLettered => "dead_lettered",
        Outcome::TooLate => "too_late",
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
