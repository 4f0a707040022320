//! The one way an event is published: with `Nats-Msg-Id` = event id, so
//! that the broker drops a re-publish inside its duplicate window, and
//! counted as published only once its PubAck arrived. Sending and awaiting
//! the PubAck are separate steps, so that many sends can be pipelined.

use async_nats::HeaderMap;
use async_nats::jetstream::context::{Context, PublishAckFuture};
use uuid::Uuid;

use super::BoxError;

/// A publish that was sent and whose PubAck has not been awaited yet.
/// Awaiting many of these after sending them all pipelines a batch.
#[must_use = "a publish is not done until its PubAck is awaited"]
pub struct PendingAck {
    event_id: Uuid,
    ack: PublishAckFuture,
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

/// [`send`] with the headers given besides (a dead letter's).
pub(super) async fn send_with_headers(
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
