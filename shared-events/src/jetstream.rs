//! JetStream set-up and publishing. This is the only place that talks to NATS
//! on the producing side, so the two rules of the design live here: every
//! publish carries `Nats-Msg-Id` = event id, and nothing counts as published
//! until its PubAck arrived.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, Config as ConsumerConfig, PullConsumer, pull};
use async_nats::jetstream::context::{Context, PublishAckFuture};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::names::Names;

mod batch;
mod requirements;

pub use batch::{MAX_ATOMIC_BATCH, Outgoing, PendingBatch, Publisher};
pub use requirements::{Correction, Refusal, Review, review};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the streams are created.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish.
    /// It is a second line of defence only; consumers deduplicate for good.
    pub duplicate_window: Duration,
    /// Copies of each stream across a cluster's servers (1 on a single
    /// server; 3 on a three-node cluster survives the loss of one node).
    /// Durable consumers keep as many ([`ensure_consumer`]). A stream created
    /// with another count is updated to this one at start-up.
    pub replicas: usize,
    /// Whether to let the order stream take atomic batches (`allow_atomic`,
    /// nats-server 2.12+), which [`Publisher`] then sends.
    pub atomic_batches: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            atomic_batches: true,
        }
    }
}

/// What the streams turned out to accept, once set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFeatures {
    /// The order stream takes atomic batches.
    pub atomic_batches: bool,
}

/// The streams could not be created or do not have the shape we need.
#[derive(Debug, thiserror::Error)]
pub enum StreamSetupError {
    /// The broker did not answer, or refused a request: worth retrying.
    #[error("setting up stream {stream}: {source}")]
    Failed {
        stream: String,
        #[source]
        source: BoxError,
    },
    /// The stream exists with settings that would lose events (see
    /// [`review`]); retrying changes nothing until an operator acts.
    #[error(
        "stream {stream} exists with settings that would lose events; start-up stopped:{}",
        list(refusals)
    )]
    Refused {
        stream: String,
        refusals: Vec<Refusal>,
    },
}

impl StreamSetupError {
    /// Whether an operator must change the stream before a start can succeed.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

fn list(refusals: &[Refusal]) -> String {
    refusals.iter().map(|r| format!("\n  - {r}")).collect()
}

/// Creates the order stream and its dead-letter stream if they do not exist
/// (file storage), then reads their configuration back: older servers drop
/// fields they do not know instead of refusing them, and a stream made
/// before may delete events ([`review`]: refused with
/// [`StreamSetupError::Refused`], or corrected where that loses nothing). A stream with another
/// number of replicas is updated to `settings.replicas`, so that
/// `STREAM_REPLICAS` can be raised (or lowered) by restarting a service.
/// With `settings.atomic_batches`, the order stream is let take atomic
/// batches where the server can.
pub async fn ensure_streams(
    js: &Context,
    names: &Names,
    settings: &StreamSettings,
) -> Result<StreamFeatures, StreamSetupError> {
    let atomic_batches = ensure_stream(
        js,
        StreamConfig {
            name: names.stream().to_owned(),
            subjects: vec![names.stream_subjects()],
            storage: StorageType::File,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        settings.atomic_batches,
    )
    .await?;
    ensure_stream(
        js,
        StreamConfig {
            name: names.dead_letter_stream().to_owned(),
            subjects: vec![names.dead_letter_subjects()],
            storage: StorageType::File,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        false,
    )
    .await?;
    Ok(StreamFeatures { atomic_batches })
}

/// The stream option that lets a stream take atomic batches (2.12+).
const ALLOW_ATOMIC: &str = "allow_atomic";

/// Creates the stream unless it exists, checks its settings ([`review`]:
/// refused if they would lose events), and updates its replicas, the
/// corrections the review asks for and, with `atomic`, [`ALLOW_ATOMIC`] in
/// one update. Returns whether the stream takes atomic batches.
///
/// async-nats 0.42 does not know `allow_atomic`, so an update is written as
/// the configuration the server sent, as JSON, with only those fields
/// changed: every field the server knows goes back as it was (a typed
/// update would clear the option). A server older than 2.12 drops the
/// field it does not know, or refuses it; then the answer is `false`.
async fn ensure_stream(
    js: &Context,
    wanted: StreamConfig,
    atomic: bool,
) -> Result<bool, StreamSetupError> {
    use async_nats::jetstream::response::Response;
    use serde_json::{Value, json};

    let fail = |source: BoxError| StreamSetupError::Failed {
        stream: wanted.name.clone(),
        source,
    };
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| fail(e.into()))?;
    let actual = stream
        .info()
        .await
        .map_err(|e| fail(e.into()))?
        .config
        .clone();
    let Review {
        refusals,
        corrections,
    } = review(&actual, &wanted);
    if !refusals.is_empty() {
        return Err(StreamSetupError::Refused {
            stream: wanted.name.clone(),
            refusals,
        });
    }

    let info: Response<Value> = js
        .request(format!("STREAM.INFO.{}", wanted.name), &json!({}))
        .await
        .map_err(|e| fail(e.into()))?;
    let mut config = match info {
        Response::Ok(info) => info["config"].clone(),
        Response::Err { error } => return Err(fail(error.into())),
    };
    let atomic_now = config[ALLOW_ATOMIC] == Value::Bool(true);
    let add_atomic = atomic && !atomic_now;
    let replicas = actual.num_replicas != wanted.num_replicas;
    if !add_atomic && !replicas && corrections.is_empty() {
        return Ok(atomic && atomic_now);
    }
    for correction in &corrections {
        correct(&wanted.name, correction, &mut config);
    }
    if replicas {
        tracing::info!(
            stream = %wanted.name,
            from = actual.num_replicas,
            to = wanted.num_replicas,
            "changing the stream's replicas"
        );
        config["num_replicas"] = json!(wanted.num_replicas);
    }
    if add_atomic {
        config[ALLOW_ATOMIC] = Value::Bool(true);
    }
    let updated: Response<Value> = js
        .request(format!("STREAM.UPDATE.{}", wanted.name), &config)
        .await
        .map_err(|e| fail(e.into()))?;
    let atomic_kept = match updated {
        Response::Ok(info) => atomic && info["config"][ALLOW_ATOMIC] == Value::Bool(true),
        // Refused for the option alone: make the other changes without it.
        Response::Err { error } if add_atomic => {
            tracing::info!(stream = %wanted.name, %error, "the server refused atomic batches");
            if replicas || !corrections.is_empty() {
                if let Some(fields) = config.as_object_mut() {
                    fields.remove(ALLOW_ATOMIC);
                }
                let retried: Response<Value> = js
                    .request(format!("STREAM.UPDATE.{}", wanted.name), &config)
                    .await
                    .map_err(|e| fail(e.into()))?;
                if let Response::Err { error } = retried {
                    return Err(fail(error.into()));
                }
            }
            false
        }
        Response::Err { error } => return Err(fail(error.into())),
    };
    if atomic && !atomic_kept {
        tracing::info!(
            stream = %wanted.name,
            "this server takes no atomic batches: publishing message by message"
        );
    }
    Ok(atomic_kept)
}

/// Writes `correction` into a stream's configuration as the server sent it,
/// and says so: an operator who set the value should learn it changed.
fn correct(stream: &str, correction: &Correction, config: &mut serde_json::Value) {
    match correction {
        Correction::RaiseDuplicateWindow { from, to } => {
            tracing::warn!(
                stream,
                from = ?from,
                to = ?to,
                "raised the stream's duplicate window to DUPLICATE_WINDOW: a shorter one lets \
                 a retry after it store an event twice"
            );
            config["duplicate_window"] =
                serde_json::json!(u64::try_from(to.as_nanos()).unwrap_or(u64::MAX));
        }
        Correction::DisallowRollups => {
            tracing::warn!(
                stream,
                "disallowed rollups on the stream: one message with a rollup header would \
                 delete its history, and nothing here sends one"
            );
            config["allow_rollup_hdrs"] = serde_json::Value::Bool(false);
        }
    }
}

/// A publish that was sent and whose PubAck has not been awaited yet.
/// Awaiting many of these after sending them all pipelines a batch.
#[must_use = "a publish is not done until its PubAck is awaited"]
pub struct PendingAck {
    event_id: Uuid,
    ack: PublishAckFuture,
}

/// What JetStream answered to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub event_id: Uuid,
    pub stream_sequence: u64,
    /// The broker had seen this `Nats-Msg-Id` inside its duplicate window and
    /// stored nothing new.
    pub duplicate: bool,
}

/// A publish failed; the event must be treated as not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("sending event {event_id} to NATS failed: {source}")]
    Send { event_id: Uuid, source: BoxError },
    #[error("JetStream did not acknowledge event {event_id}: {source}")]
    Ack { event_id: Uuid, source: BoxError },
    #[error("JetStream did not store the batch of {count} events from {first}: {reason}")]
    Batch {
        first: Uuid,
        count: usize,
        reason: String,
    },
}

/// The header that carries an event's W3C trace context to its consumers.
pub const TRACEPARENT: &str = "traceparent";

/// Sends one event with `Nats-Msg-Id` = `event_id` (and `traceparent` when
/// given); await the returned [`PendingAck`] before treating it as published.
pub async fn send(
    js: &Context,
    subject: String,
    event_id: Uuid,
    traceparent: Option<&str>,
    payload: impl Into<bytes::Bytes>,
) -> Result<PendingAck, PublishError> {
    let mut headers = HeaderMap::new();
    if let Some(traceparent) = traceparent {
        headers.insert(TRACEPARENT, traceparent);
    }
    send_with_headers(js, subject, event_id, headers, payload).await
}

async fn send_with_headers(
    js: &Context,
    subject: String,
    event_id: Uuid,
    mut headers: HeaderMap,
    payload: impl Into<bytes::Bytes>,
) -> Result<PendingAck, PublishError> {
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event_id.to_string().as_str(),
    );
    let ack = js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|e| PublishError::Send {
            event_id,
            source: e.into(),
        })?;
    Ok(PendingAck { event_id, ack })
}

/// Converts the server timestamp of a JetStream message.
pub fn stored_at(unix_nanos: i128) -> DateTime<Utc> {
    let nanos = i64::try_from(unix_nanos).unwrap_or(i64::MAX);
    DateTime::from_timestamp_nanos(nanos)
}

/// Creates the durable pull consumer `durable` on `stream` (explicit acks,
/// one filter subject) if it does not exist, and checks
/// what the server kept: older servers silently drop fields they don't know.
/// The consumer keeps as many copies as its stream: one created before the
/// stream's replicas were raised stays at its old count unless told (the
/// server does not carry it along), so it is updated here.
pub async fn ensure_consumer(
    js: &Context,
    stream: &str,
    durable: &str,
    filter_subject: String,
    ack_wait: Duration,
) -> Result<PullConsumer, StreamSetupError> {
    let fail = |source: BoxError| StreamSetupError::Failed {
        stream: stream.to_owned(),
        source,
    };
    let mut stream = js.get_stream(stream).await.map_err(|e| fail(e.into()))?;
    let replicas = stream
        .info()
        .await
        .map_err(|e| fail(e.into()))?
        .config
        .num_replicas;
    let wanted = pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Unlimited on the server: the consumer loop bounds the deliveries of a
        // failing message itself and dead-letters it, except while its
        // database is down (a server-side bound would drop those messages).
        max_deliver: -1,
        max_ack_pending: 1000,
        num_replicas: replicas,
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(durable, wanted.clone())
        .await
        .map_err(|e| fail(e.into()))?;
    let actual = consumer
        .info()
        .await
        .map_err(|e| fail(e.into()))?
        .config
        .clone();
    if actual.filter_subject != wanted.filter_subject || actual.ack_policy != AckPolicy::Explicit {
        return Err(fail(
            format!(
                "consumer {durable} exists with filter {:?} and {:?} acks; expected {:?} and explicit acks",
                actual.filter_subject, actual.ack_policy, wanted.filter_subject
            )
            .into(),
        ));
    }
    if actual.num_replicas != replicas {
        tracing::info!(
            consumer = durable,
            from = actual.num_replicas,
            to = replicas,
            "changing the consumer's replicas to its stream's"
        );
        let _: async_nats::jetstream::consumer::Consumer<ConsumerConfig> = stream
            .update_consumer(ConsumerConfig {
                num_replicas: replicas,
                ..actual
            })
            .await
            .map_err(|e| fail(e.into()))?;
        consumer = stream.get_consumer(durable).await.map_err(fail)?;
    }
    Ok(consumer)
}

impl PendingAck {
    /// Waits for the PubAck.
    pub async fn confirmed(self) -> Result<Published, PublishError> {
        let event_id = self.event_id;
        let ack = self.ack.await.map_err(|e| PublishError::Ack {
            event_id,
            source: e.into(),
        })?;
        Ok(Published {
            event_id,
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// What came back for a batch of publishes.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// PubAcks for events the stream stored anew.
    pub new: u64,
    /// PubAcks for events the stream already had (a retry of a publish
    /// whose PubAck was lost, inside the duplicate window).
    pub duplicates: u64,
    /// The first publish that got no PubAck, if any did not.
    pub failed: Option<PublishError>,
}

impl Confirmed {
    /// Counts `answers`, keeping the first failure.
    pub fn of(answers: impl IntoIterator<Item = Result<Published, PublishError>>) -> Self {
        let mut confirmed = Confirmed::default();
        for answer in answers {
            match answer {
                Ok(published) if published.duplicate => confirmed.duplicates += 1,
                Ok(_) => confirmed.new += 1,
                Err(error) => {
                    confirmed.failed.get_or_insert(error);
                }
            }
        }
        confirmed
    }

    /// `Ok` when every publish was acknowledged.
    pub fn result(self) -> Result<(), PublishError> {
        self.failed.map_or(Ok(()), Err)
    }
}

/// Sends one event and waits for its PubAck.
pub async fn publish(
    js: &Context,
    subject: String,
    event_id: Uuid,
    traceparent: Option<&str>,
    payload: Vec<u8>,
) -> Result<Published, PublishError> {
    send(js, subject, event_id, traceparent, payload)
        .await?
        .confirmed()
        .await
}

/// Publishes `OrderPlaced` for `orders` again, each under the event id
/// derived from its order (see [`crate::placed_event_id`]), pipelined: all
/// sends first, then every PubAck. However often it runs, each order is
/// applied once: within the duplicate window the broker drops a repeat, and
/// for good the consumers do (they key by order as well as by event id).
pub async fn republish_orders(
    js: &Context,
    names: &Names,
    orders: impl IntoIterator<Item = crate::OrderPlaced>,
) -> Result<usize, PublishError> {
    let mut pending = Vec::new();
    for order in orders {
        let event = crate::Envelope::new(
            crate::placed_event_id(order.order_id),
            order.placed_at,
            order,
        );
        pending.push(
            send(
                js,
                names.order_placed_subject(),
                event.event_id,
                None,
                event.to_bytes(),
            )
            .await?,
        );
    }
    let republished = pending.len();
    for ack in pending {
        ack.confirmed().await?;
    }
    Ok(republished)
}

/// The headers a dead letter carries, for whoever reads them back.
pub mod dead_letter_headers {
    pub const REASON: &str = "Dead-Letter-Reason";
    pub const CONSUMER: &str = "Dead-Letter-Consumer";
    pub const SUBJECT: &str = "Dead-Letter-Subject";
    pub const STREAM_SEQUENCE: &str = "Dead-Letter-Stream-Sequence";
}

/// Why and where a message was dead-lettered; carried as headers.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub consumer: &'a str,
    pub reason: &'a str,
    pub original_subject: &'a str,
    pub original_stream_sequence: u64,
}

/// Copies an unprocessable message to the dead-letter stream, with the reason
/// in headers, and waits for the PubAck. The message id makes a retry after a
/// crash land once.
pub async fn publish_dead_letter(
    js: &Context,
    names: &Names,
    letter: &DeadLetter<'_>,
    payload: Vec<u8>,
) -> Result<Published, PublishError> {
    let id = format!(
        "{}:{}:{}",
        names.stream(),
        letter.consumer,
        letter.original_stream_sequence
    );
    let event_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(
        dead_letter_headers::REASON,
        one_line(letter.reason).as_str(),
    );
    headers.insert(dead_letter_headers::CONSUMER, letter.consumer);
    headers.insert(dead_letter_headers::SUBJECT, letter.original_subject);
    headers.insert(
        dead_letter_headers::STREAM_SEQUENCE,
        letter.original_stream_sequence.to_string().as_str(),
    );
    send_with_headers(
        js,
        names.dead_letter_subject(letter.consumer),
        event_id,
        headers,
        payload,
    )
    .await?
    .confirmed()
    .await
}

/// Header values cannot hold line breaks; keep them short, too.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(512).collect()
}
