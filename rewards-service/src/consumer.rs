//! The idempotent consumer of `OrderPlaced`.
//!
//! Per message: one transaction inserts the ledger row and adds to the
//! balance; the message is acked only after COMMIT. A redelivery, or the same
//! order under another event id, hits the ledger's keys and changes nothing.
//! An event that can never be credited (undecodable, unknown version,
//! inconsistent) is copied to the dead-letter stream with the reason and
//! terminated; a transient failure (database down) is nak'ed with a growing delay.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt as _;
use service_kit::crash::crash_point;
use shared_events::jetstream::{DeadLetter, publish_dead_letter};
use shared_events::{Envelope, Names, OrderPlaced};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::domain::Credit;

const MAX_NAK_DELAY: Duration = Duration::from_secs(10);

/// What handling one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Credited,
    /// Event or order already credited; acked with no effect.
    Duplicate,
    /// Sent to the dead-letter stream and terminated.
    DeadLettered,
}

#[derive(Clone)]
pub struct Consumer {
    pool: PgPool,
    jetstream: async_nats::jetstream::Context,
    names: Names,
    settings: ConsumerSettings,
}

/// Tuning of the consumer.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    /// Messages processed at once.
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
}

impl Consumer {
    pub fn new(
        pool: PgPool,
        jetstream: async_nats::jetstream::Context,
        names: Names,
        settings: ConsumerSettings,
    ) -> Self {
        Self {
            pool,
            jetstream,
            names,
            settings,
        }
    }

    /// Creates the durable pull consumer if needed and checks what the server
    /// kept of its configuration (older servers drop fields they don't know).
    pub async fn ensure(&self) -> anyhow::Result<PullConsumer> {
        let name = self.names.rewards_consumer();
        let stream = self
            .jetstream
            .get_stream(self.names.stream())
            .await
            .context("looking up the order stream")?;
        let wanted = pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: self.names.order_placed_subject(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: -1,
            max_ack_pending: 1000,
            ..Default::default()
        };
        let mut consumer: PullConsumer = stream
            .get_or_create_consumer(name, wanted.clone())
            .await
            .with_context(|| format!("creating consumer {name}"))?;
        let actual = &consumer
            .info()
            .await
            .context("reading the consumer back")?
            .config;
        anyhow::ensure!(
            actual.filter_subject == wanted.filter_subject
                && actual.ack_policy == AckPolicy::Explicit,
            "consumer {name} exists with filter {:?} and {:?} acks; expected {:?} and explicit acks",
            actual.filter_subject,
            actual.ack_policy,
            wanted.filter_subject,
        );
        Ok(consumer)
    }

    /// Consumes until `shutdown` is cancelled; messages in hand are finished.
    /// Lost connections and vanished consumers are retried with a pause.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => pause = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), retry_in = ?pause, "consumer stopped");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!("consumer stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let consumer = self.ensure().await?;
        let messages = consumer
            .messages()
            .await
            .context("subscribing to messages")?;
        tracing::info!(consumer = self.names.rewards_consumer(), "consuming");
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
        match self.process(&message).await {
            Ok(outcome) => {
                metrics::counter!("events_consumed_total", "outcome" => outcome_label(outcome))
                    .increment(1);
                if outcome != Outcome::DeadLettered {
                    crash_point("consumer_after_commit_before_ack");
                    if let Err(error) = message.ack().await {
                        // The message will be redelivered and found a duplicate.
                        tracing::warn!(%error, "ack failed");
                    }
                }
            }
            Err(error) => {
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                let delay = nak_delay(delivered);
                metrics::counter!("events_consumed_total", "outcome" => "retried").increment(1);
                tracing::warn!(error = format!("{error:#}"), delivered, retry_in = ?delay, "processing failed; will retry");
                if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(%error, "nak failed; the message will come back after the ack wait");
                }
            }
        }
    }

    /// Credits the message's order once. An `Err` is transient: retry later.
    pub async fn process(&self, message: &Message) -> anyhow::Result<Outcome> {
        let sequence = message
            .info()
            .map_err(|e| anyhow::anyhow!("reading message metadata: {e}"))?
            .stream_sequence;
        let credit = match Envelope::<OrderPlaced>::decode(&message.payload) {
            Ok(event) => Credit::from_event(&event).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let credit = match credit {
            Ok(credit) => credit,
            Err(reason) => return self.dead_letter(message, sequence, &reason).await,
        };
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the credit transaction")?;
        let credited = db::credit(&mut tx, &credit, sequence)
            .await
            .context("writing the credit")?;
        tx.commit().await.context("committing the credit")?;
        Ok(if credited {
            Outcome::Credited
        } else {
            Outcome::Duplicate
        })
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
            "dead-lettering an event that cannot be credited"
        );
        let letter = DeadLetter {
            consumer: self.names.rewards_consumer(),
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

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Credited => "credited",
        Outcome::Duplicate => "duplicate",
        Outcome::DeadLettered => "dead_lettered",
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
