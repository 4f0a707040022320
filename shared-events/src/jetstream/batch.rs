//! Publishing many events at once: one atomic batch where the stream takes
//! them, pipelined single publishes where it does not.
//!
//! With `sync_interval: always` the server flushes to disk before each
//! PubAck, so publishing message by message is bounded by one flush per
//! message (or per few, pipelined). An atomic batch (ADR-50, nats-server
//! 2.12+, stream option `allow_atomic`) is stored with one flush and
//! answered with one PubAck for all of its messages.
//!
//! The wire protocol: every message of a batch carries `Nats-Batch-Id` and
//! `Nats-Batch-Sequence` (from 1); the last one carries `Nats-Batch-Commit:
//! 1` and a reply subject, and the answer on it is the batch's PubAck (the
//! sequence of its last message, the batch id and the count) or an error.
//! The messages before it are sent without a reply subject: whatever goes
//! wrong with them, the commit's answer says so, and a batch that never
//! commits (a connection lost half-way) is abandoned by the server. Nothing
//! of a batch is stored unless all of it is.
//!
//! Every message keeps its `Nats-Msg-Id`. A batch holding a message the
//! stream already has (a relay publishing again after a crash before its
//! DELETE) is refused whole, by design of atomic batches; that batch is then
//! published message by message, so each message is stored or answered
//! "duplicate" on its own, and the publisher counts both as before.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use uuid::Uuid;

use super::{Confirmed, PendingAck, PublishError, Published, TRACEPARENT, send};

/// Most messages the server takes in one atomic batch.
pub const MAX_ATOMIC_BATCH: usize = 1000;
/// The server's error code for an atomic batch holding a duplicate
/// message id (of a stored message or of another in the batch).
const DUPLICATE_IN_BATCH: u64 = 10201;

const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// An event to publish: its subject, its id (the `Nats-Msg-Id`), its bytes,
/// and the W3C trace context it is sent under (the `traceparent` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub subject: String,
    pub event_id: Uuid,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
}

/// The one way order-service hands events to JetStream in bulk. Cheap to
/// clone. Whether it sends atomic batches is decided once, at start-up, by
/// what the stream turned out to accept ([`super::ensure_streams`]).
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    atomic_batches: bool,
    ack_timeout: Duration,
}

impl Publisher {
    /// A publisher over `client`. `atomic_batches` only where the stream
    /// has `allow_atomic` set: an older server ignores the batch headers and
    /// stores each message on its own, answering the last one only.
    pub fn new(client: async_nats::Client, atomic_batches: bool) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(client.clone()),
            client,
            atomic_batches,
            // async-nats' own default for a JetStream PubAck.
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// The JetStream context, for single publishes.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    /// Whether [`send_batch`](Self::send_batch) sends atomic batches.
    pub fn atomic_batches(&self) -> bool {
        self.atomic_batches
    }

    /// Sends `events`, in order, and returns what to await for their
    /// PubAcks: one atomic batch per [`MAX_ATOMIC_BATCH`] events where the
    /// stream takes them (a single event is published on its own), or one
    /// pipelined publish per event. A send that fails fails the call; a
    /// batch sent is only published once [`PendingBatch::confirmed`] says so.
    pub async fn send_batch(&self, events: Vec<Outgoing>) -> Result<PendingBatch, PublishError> {
        let mut parts = Vec::new();
        if self.atomic_batches && events.len() > 1 {
            let mut events = events.into_iter().map(Message::from).peekable();
            while events.peek().is_some() {
                let chunk: Vec<Message> = events.by_ref().take(MAX_ATOMIC_BATCH).collect();
                parts.push(Part::Atomic(self.send_atomic(chunk).await?));
            }
        } else {
            let mut acks = Vec::with_capacity(events.len());
            for event in events {
                acks.push(
                    send(
                        &self.jetstream,
                        event.subject,
                        event.event_id,
                        event.traceparent.as_deref(),
                        event.payload,
                    )
                    .await?,
                );
            }
            parts.push(Part::Pipelined(acks));
        }
        Ok(PendingBatch {
            publisher: self.clone(),
            parts,
        })
    }

    async fn send_atomic(&self, messages: Vec<Message>) -> Result<AtomicBatch, PublishError> {
        let batch_id = Uuid::now_v7().simple().to_string();
        let first = messages[0].event_id;
        let inbox = self.client.new_inbox();
        let reply = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| PublishError::Send {
                event_id: first,
                source: e.into(),
            })?;
        let count = messages.len();
        for (index, message) in messages.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                message.event_id.to_string().as_str(),
            );
            if let Some(traceparent) = &message.traceparent {
                headers.insert(TRACEPARENT, traceparent.as_str());
            }
            headers.insert(BATCH_ID, batch_id.as_str());
            headers.insert(BATCH_SEQUENCE, (index + 1).to_string().as_str());
            let subject = message.subject.clone();
            let payload = message.payload.clone();
            let sent = if index + 1 == count {
                headers.insert(BATCH_COMMIT, "1");
                self.client
                    .publish_with_reply_and_headers(subject, inbox.clone(), headers, payload)
                    .await
            } else {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
            };
            sent.map_err(|e| PublishError::Send {
                event_id: message.event_id,
                source: e.into(),
            })?;
        }
        Ok(AtomicBatch {
            batch_id,
            reply,
            messages,
        })
    }
}

/// Batches sent whose PubAcks have not been awaited yet.
#[must_use = "a batch is not published until its PubAcks are awaited"]
pub struct PendingBatch {
    publisher: Publisher,
    parts: Vec<Part>,
}

enum Part {
    Atomic(AtomicBatch),
    Pipelined(Vec<PendingAck>),
}

struct AtomicBatch {
    batch_id: String,
    reply: async_nats::Subscriber,
    messages: Vec<Message>,
}

/// An [`Outgoing`] whose payload can be sent twice without a copy.
struct Message {
    subject: String,
    event_id: Uuid,
    payload: Bytes,
    traceparent: Option<String>,
}

impl From<Outgoing> for Message {
    fn from(event: Outgoing) -> Self {
        Self {
            subject: event.subject,
            event_id: event.event_id,
            payload: event.payload.into(),
            traceparent: event.traceparent,
        }
    }
}

impl PendingBatch {
    /// Awaits every PubAck and counts what the stream stored anew and what
    /// it already had: each of them even after one failed, since a publish
    /// whose PubAck arrived happened, and its count must not hang on its
    /// neighbours' (the retry of the batch meets it again as a duplicate).
    pub async fn confirmed(self) -> Confirmed {
        Confirmed::of(self.each().await)
    }

    /// The answer for each event, in the order sent. An atomic batch is
    /// stored at consecutive stream sequences ending at its PubAck's.
    pub async fn each(self) -> Vec<Result<Published, PublishError>> {
        let mut answers = Vec::new();
        for part in self.parts {
            match part {
                Part::Pipelined(acks) => {
                    for ack in acks {
                        answers.push(ack.confirmed().await);
                    }
                }
                Part::Atomic(batch) => answers.extend(self.publisher.settle(batch).await),
            }
        }
        answers
    }
}

/// The answer to a batch's commit: its PubAck or an API error.
#[derive(Debug, Deserialize)]
struct CommitAnswer {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    count: usize,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl Publisher {
    /// The answers for one atomic batch: all stored anew, or (refused for a
    /// duplicate) each message published on its own, or all failed.
    async fn settle(&self, mut batch: AtomicBatch) -> Vec<Result<Published, PublishError>> {
        let first = batch.messages[0].event_id;
        let count = batch.messages.len();
        let failed = |reason: String| {
            (0..count)
                .map(|_| {
                    Err(PublishError::Batch {
                        first,
                        count,
                        reason: reason.clone(),
                    })
                })
                .collect()
        };
        let answer = match tokio::time::timeout(self.ack_timeout, batch.reply.next()).await {
            Err(_) => return failed(format!("no answer within {:?}", self.ack_timeout)),
            Ok(None) => return failed("the connection closed".into()),
            Ok(Some(message)) => message,
        };
        match serde_json::from_slice::<CommitAnswer>(&answer.payload) {
            Ok(CommitAnswer {
                error: None,
                seq: last,
                batch: id,
                count: stored,
            }) if id == batch.batch_id && stored == count && last >= count as u64 => {
                let first_sequence = last + 1 - count as u64;
                batch
                    .messages
                    .iter()
                    .zip(first_sequence..)
                    .map(|(message, stream_sequence)| {
                        Ok(Published {
                            event_id: message.event_id,
                            stream_sequence,
                            duplicate: false,
                        })
                    })
                    .collect()
            }
            Ok(CommitAnswer {
                error: Some(error), ..
            }) if error.err_code == DUPLICATE_IN_BATCH => self.one_by_one(batch.messages).await,
            Ok(CommitAnswer {
                error: Some(error), ..
            }) => failed(error.description),
            Ok(other) => failed(format!(
                "a PubAck for batch {:?} of {} messages, not this batch",
                other.batch, other.count
            )),
            Err(_) => failed(format!(
                "an answer that is no PubAck (status {:?})",
                answer.status
            )),
        }
    }

    /// Publishes a refused batch's messages one at a time, pipelined.
    async fn one_by_one(&self, messages: Vec<Message>) -> Vec<Result<Published, PublishError>> {
        let mut acks = Vec::with_capacity(messages.len());
        let mut unsent = Vec::new();
        for message in messages {
            if !unsent.is_empty() {
                // Not sent after an earlier send failed: each fails alike.
                unsent.push(PublishError::Send {
                    event_id: message.event_id,
                    source: "an earlier send of its batch failed".into(),
                });
                continue;
            }
            match send(
                &self.jetstream,
                message.subject,
                message.event_id,
                message.traceparent.as_deref(),
                message.payload,
            )
            .await
            {
                Ok(ack) => acks.push(ack),
                Err(error) => unsent.push(error),
            }
        }
        let mut answers = Vec::with_capacity(acks.len() + unsent.len());
        for ack in acks {
            answers.push(ack.confirmed().await);
        }
        answers.extend(unsent.into_iter().map(Err));
        answers
    }
}
