//! The loop every idempotent consumer of the order stream runs; a service
//! plugs in only what applying one event of an order's life
//! ([`OrderEvent`]: `OrderPlaced`, `OrderCancelled`) means to its database
//! ([`Apply`]).
//!
//! The durable consumer takes every subject of the stream, so whichever
//! subject an order's events are published on reaches it; a message that
//! is no event of an order is dead-lettered like any other that cannot be
//! decoded. The order of an order's events is the service's to keep: the
//! loop applies what arrives, as it arrives.
//!
//! Messages are taken in batches of whatever has arrived (up to a limit).
//! Each is decoded and checked; the valid ones are applied in ONE
//! transaction (the service's own dedup keys make each event idempotent) and
//! acked only after COMMIT — one fsync for the batch instead of one per
//! message.
//!
//! One bad message never holds up another:
//! - an event that cannot be decoded or fails the service's checks is
//!   dead-lettered at once, with the reason in headers, and terminated;
//! - when a batch fails, it is applied again one message at a time, so the
//!   failure is pinned on the message that causes it; a message that fails
//!   deterministically ([`Failure::Poison`]) is dead-lettered, the rest go on;
//! - a transient failure ([`Failure::Transient`]: a lost connection, a
//!   database shutting down, a lock or statement timeout, a serialization
//!   failure, a deadlock) says nothing about the messages: the whole batch
//!   is naked with backoff and retried for as long as the cause lasts, and
//!   never counted toward dead-lettering — the broker's delivery count is
//!   not what decides (its `MaxDeliver` is unlimited), this process's count
//!   of the message's own failures is;
//! - other failures nak the message with exponential backoff and jitter;
//!   after `max_deliver` such failures it is dead-lettered (the count lives
//!   in this process; a restart starts it again).
//!
//! Lost connections and vanished consumers are retried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use backon::Retryable as _;
use futures::StreamExt as _;
use shared_events::jetstream::{DeadLetter, ensure_consumer, publish_dead_letter};
use shared_events::{Names, OrderEvent};
use tokio_util::sync::CancellationToken;

use crate::crash::crash_point;
use crate::failure::{Failure, classify};
use crate::startup::backoff;

const FIRST_NAK_DELAY: Duration = Duration::from_millis(200);
/// Messages whose failures are counted at once: the consumers' ack-pending
/// limit, with room.
const MAX_TRACKED_FAILURES: usize = 10_000;
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
    type Item: Clone + Send + Sync + 'static;

    /// The unique constraints that make applying an event idempotent (see
    /// [`classify`]).
    const IDEMPOTENCY_KEYS: &'static [&'static str];

    /// Checks one event; an `Err` means it can never be applied (it is
    /// dead-lettered with that reason).
    fn prepare(&self, event: OrderEvent, stream_sequence: u64) -> anyhow::Result<Self::Item>;

    /// Applies `items` in one transaction; one outcome per item, in order.
    /// On an error nothing was applied; [`classify`] tells what it means
    /// (a [`Refused`](crate::failure::Refused) in its chain: the event can
    /// never be applied).
    fn apply_batch(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = anyhow::Result<Vec<Applied>>> + Send;
}

/// A consumer's settings, as both services take them.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerArgs {
    /// Most messages applied in one transaction (a batch is whatever has
    /// arrived, so a quiet stream is applied one message at a time).
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_batch: u16,
    /// How long JetStream waits for an ack before redelivering (set when the
    /// durable consumer is created).
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = crate::duration::parse)]
    pub consumer_ack_wait: Duration,
    /// Failures of an event that cannot be applied before it is
    /// dead-lettered (transient database failures — unreachable, shutting
    /// down, timeouts, serialization failures, deadlocks — do not count).
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub consumer_max_deliver: i64,
}

impl ConsumerArgs {
    /// The settings of the durable consumer `durable`, with its crash and
    /// fault points.
    pub fn settings(
        &self,
        durable: &'static str,
        crash_point: &'static str,
        fault_point: &'static str,
    ) -> ConsumerSettings {
        ConsumerSettings {
            durable,
            batch: usize::from(self.consumer_batch),
            ack_wait: self.consumer_ack_wait,
            max_deliver: self.consumer_max_deliver,
            crash_point,
            fault_point,
        }
    }
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
    /// Deliveries of a message that keeps failing before it is dead-lettered
    /// (not counting transient database failures).
    pub max_deliver: i64,
    /// Crash point between COMMIT and ack.
    pub crash_point: &'static str,
    /// Fault point that makes every apply fail (a retryable failure).
    pub fault_point: &'static str,
}

pub struct EventConsumer<A> {
    jetstream: async_nats::jetstream::Context,
    names: Names,
    settings: ConsumerSettings,
    apply: A,
    /// Retryable failures per stream sequence. The server's delivery count
    /// would also count redeliveries after transient failures, and
    /// dead-letter a healthy event that waited out a lock or an outage.
    failures: Mutex<HashMap<u64, i64>>,
}

/// A message whose event passed the checks, with what to apply, and its
/// span (ended when this is dropped: once the message is acked, naked or
/// dead-lettered).
struct Valid<T> {
    message: Message,
    item: T,
    _span: opentelemetry::global::BoxedSpan,
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
            failures: Mutex::default(),
        }
    }

    /// Creates the durable pull consumer if needed, on every subject of the
    /// stream (one created on `OrderPlaced`'s subject alone is widened).
    pub async fn ensure(&self) -> anyhow::Result<PullConsumer> {
        Ok(ensure_consumer(
            &self.jetstream,
            self.names.stream(),
            self.settings.durable,
            self.names.stream_subjects(),
            self.settings.ack_wait,
        )
        .await?)
    }

    /// Consumes until `shutdown` is cancelled; messages in hand are finished.
    /// A lost connection or a vanished consumer is retried with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer = self.settings.durable;
        let stopping = shutdown.clone();
        let _ = (|| self.consume(&shutdown))
            .retry(backoff(Duration::from_secs(5)))
            .sleep(move |pause| {
                let shutdown = stopping.clone();
                async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            })
            .when(|_| !shutdown.is_cancelled())
            .notify(|error, pause| tracing::warn!(consumer, error = format!("{error:#}"), retry_in = ?pause, "consumer stopped"))
            .await;
        tracing::info!(consumer, "consumer stopped");
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
        anyhow::ensure!(shutdown.is_cancelled(), "the message stream ended");
        Ok(())
    }

    /// Dead-letters what can never be applied, applies the rest in one
    /// transaction and acks after COMMIT; a failed batch is applied again
    /// message by message.
    #[tracing::instrument(
        name = "consumer_batch",
        skip_all,
        fields(consumer = self.settings.durable, messages = messages.len())
    )]
    async fn handle(&self, messages: Vec<Message>) {
        crate::meters::consumer_batch(self.settings.durable, messages.len());
        let mut valid = Vec::with_capacity(messages.len());
        for message in messages {
            match self.check(&message) {
                Ok(item) => {
                    let span = self.span(&message);
                    valid.push(Valid {
                        message,
                        item,
                        _span: span,
                    });
                }
                Err(reason) => self.dead_letter(&message, &format!("{reason:#}")).await,
            }
        }
        if valid.is_empty() {
            return;
        }
        let items = valid.iter().map(|v| v.item.clone()).collect();
        match self.apply(items).await {
            Ok(outcomes) => {
                tracing::debug!(applied = valid.len(), "consumer batch applied");
                self.acknowledge(valid, outcomes).await;
            }
            Err(error) => match classify(&error, A::IDEMPOTENCY_KEYS) {
                // Applying them one by one would fail the same way.
                Failure::Transient => {
                    for v in &valid {
                        self.nak(&v.message, &error).await;
                    }
                }
                _ if valid.len() == 1 => self.failed_alone(valid.remove(0), &error).await,
                _ => {
                    crate::meters::consumer_batch_split(self.settings.durable);
                    tracing::warn!(
                        consumer = self.settings.durable,
                        size = valid.len(),
                        error = format!("{error:#}"),
                        "a batch failed; applying its messages one by one"
                    );
                    for v in valid {
                        self.apply_alone(v).await;
                    }
                }
            },
        }
    }

    async fn apply(&self, items: Vec<A::Item>) -> anyhow::Result<Vec<Applied>> {
        if crate::crash::failing(self.settings.fault_point) {
            anyhow::bail!("fault point {} is switched on", self.settings.fault_point);
        }
        self.apply.apply_batch(items).await
    }

    async fn apply_alone(&self, valid: Valid<A::Item>) {
        match self.apply(vec![valid.item.clone()]).await {
            Ok(outcomes) => self.acknowledge(vec![valid], outcomes).await,
            Err(error) => self.failed_alone(valid, &error).await,
        }
    }

    /// One message failed on its own: dead-letter it if it will never
    /// succeed, else retry it later.
    async fn failed_alone(&self, valid: Valid<A::Item>, error: &anyhow::Error) {
        let reason = match classify(error, A::IDEMPOTENCY_KEYS) {
            Failure::Poison => format!("{error:#}"),
            Failure::Transient => return self.nak(&valid.message, error).await,
            Failure::Retry => {
                let failed = self.count_failure(&valid.message);
                if failed < self.settings.max_deliver {
                    return self.nak(&valid.message, error).await;
                }
                format!("failed {failed} deliveries; last error: {error:#}")
            }
        };
        self.dead_letter(&valid.message, &reason).await;
    }

    /// Counts a retryable failure of `message`; how many it has had.
    fn count_failure(&self, message: &Message) -> i64 {
        let sequence = sequence(message);
        let mut failures = self.failures.lock().expect("failures lock");
        // A message naked here and then applied by another instance is never
        // forgotten here: past the most that can be in flight, start over
        // (a poison message is still dead-lettered, just later).
        if failures.len() > MAX_TRACKED_FAILURES && !failures.contains_key(&sequence) {
            failures.clear();
        }
        let failed = failures.entry(sequence).or_insert(0);
        *failed += 1;
        *failed
    }

    /// The message is done with (acked or dead-lettered).
    fn forget_failures(&self, message: &Message) {
        let sequence = sequence(message);
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&sequence);
    }

    async fn acknowledge(&self, applied: Vec<Valid<A::Item>>, outcomes: Vec<Applied>) {
        let consumer = self.settings.durable;
        if outcomes.contains(&Applied::New) {
            crash_point(self.settings.crash_point);
        }
        let acks = applied.iter().zip(outcomes).map(|(v, outcome)| async move {
            count(
                consumer,
                match outcome {
                    Applied::New => "applied",
                    Applied::Duplicate => "duplicate",
                },
            );
            self.forget_failures(&v.message);
            if let Err(error) = v.message.ack().await {
                // It will be redelivered and found a duplicate.
                tracing::warn!(consumer, %error, "ack failed");
            }
        });
        futures::future::join_all(acks).await;
    }

    /// The span of applying `message`, continuing the trace of its publish.
    fn span(&self, message: &Message) -> opentelemetry::global::BoxedSpan {
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(shared_events::jetstream::TRACEPARENT))
            .map(|value| value.as_str());
        let event_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|value| value.as_str().parse().ok());
        crate::trace::process_span(self.settings.durable, event_id, traceparent)
    }

    /// Decodes and checks one message; `Err` is why it can never be applied.
    fn check(&self, message: &Message) -> anyhow::Result<A::Item> {
        let sequence = message
            .info()
            .map_err(|e| anyhow::anyhow!("unreadable message metadata: {e}"))?
            .stream_sequence;
        let event = OrderEvent::decode(&message.payload)?;
        self.apply.prepare(event, sequence)
    }

    /// Copies the message to the dead-letter stream with `reason`, then
    /// terminates it; if that fails, the message is retried.
    async fn dead_letter(&self, message: &Message, reason: &str) {
        let consumer = self.settings.durable;
        let sequence = sequence(message);
        tracing::warn!(consumer, sequence, reason, "dead-lettering an event");
        let letter = DeadLetter {
            consumer,
            reason,
            original_subject: message.subject.as_str(),
            original_stream_sequence: sequence,
        };
        let result = async {
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
        };
        match result.await {
            Ok(()) => {
                self.forget_failures(message);
                count(consumer, "dead_lettered");
            }
            Err(error) => self.nak(message, &error).await,
        }
    }

    /// Asks for redelivery after a delay that grows with each attempt.
    async fn nak(&self, message: &Message, error: &anyhow::Error) {
        let consumer = self.settings.durable;
        let delivered = message.info().map_or(1, |i| i.delivered);
        let delay = jittered(nak_delay(delivered));
        count(consumer, "retried");
        tracing::warn!(consumer, error = format!("{error:#}"), delivered, retry_in = ?delay, "processing failed; will retry");
        if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(consumer, %error, "nak failed; redelivery after the ack wait");
        }
    }
}

fn sequence(message: &Message) -> u64 {
    message.info().map_or(0, |i| i.stream_sequence)
}

fn count(consumer: &'static str, outcome: &'static str) {
    crate::meters::consumed(consumer, outcome);
}

/// 200 ms doubled per delivery, capped.
fn nak_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 8) - 1).unwrap_or(0);
    (FIRST_NAK_DELAY * 2_u32.pow(exponent)).min(MAX_NAK_DELAY)
}

/// Between half and all of `delay`, so that messages failed together do not
/// come back together.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// The durable consumer `durable` of `stream`, if it exists.
pub async fn find_durable(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> anyhow::Result<Option<PullConsumer>> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::stream::ConsumerErrorKind;

    match jetstream.get_consumer_from_stream(durable, stream).await {
        Ok(consumer) => Ok(Some(consumer)),
        Err(error)
            if matches!(error.kind(), ConsumerErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(error) => {
            Err(anyhow::Error::new(error).context(format!("looking up consumer {durable}")))
        }
    }
}

/// Whether a durable consumer has applied and acked everything in its stream.
pub fn caught_up(info: &async_nats::jetstream::consumer::Info) -> bool {
    info.num_pending == 0 && info.num_ack_pending == 0
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

    #[test]
    fn jitter_stays_within_half_and_all_of_the_delay() {
        for _ in 0..1000 {
            let delay = jittered(Duration::from_millis(400));
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&delay));
        }
    }
}
