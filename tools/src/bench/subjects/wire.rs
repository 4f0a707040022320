//! JetStream publishes with headers the services' publisher does not set
//! yet (the expected sequence of an order's subjects), and the broker's
//! answers as they come: stored, duplicate, or refused with its error code.
//! An atomic batch is sent as the services' publisher sends one
//! (`Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit` on the last
//! message, whose reply is the batch's PubAck).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `Nats-Expected-Last-Subject-Sequence-Subject` (nats-server 2.11+): the
/// subject, wildcards allowed, whose last sequence
/// `Nats-Expected-Last-Subject-Sequence` is checked against, instead of
/// the subject published to.
pub const EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// How long an answer is waited for, as the services' publisher waits.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One message to publish, headers included.
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl Message {
    /// A message with `Nats-Msg-Id` = `event_id`.
    pub fn new(subject: String, event_id: Uuid, payload: Vec<u8>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event_id.to_string().as_str(),
        );
        Self {
            subject,
            headers,
            payload: payload.into(),
        }
    }

    /// Expects the last message of `subject` (the subject published to when
    /// `None`) to be at stream sequence `sequence` (0: no message yet).
    pub fn expecting(mut self, sequence: u64, subject: Option<&str>) -> Self {
        self.headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            sequence.to_string().as_str(),
        );
        if let Some(subject) = subject {
            self.headers
                .insert(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, subject);
        }
        self
    }

    /// The same message without its expectation: a plain re-publish.
    pub fn unchecked(mut self) -> Self {
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers.iter() {
            let name: &str = name.as_ref();
            if !name.starts_with("Nats-Expected-") {
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        self.headers = headers;
        self
    }
}

/// What JetStream answered to a publish or to an atomic batch's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    /// Stored; the sequence of the (last) message and how many were stored.
    Stored { sequence: u64, count: usize },
    /// Taken for a re-publish of the message stored at `sequence`.
    Duplicate { sequence: u64 },
    /// Refused with JetStream's error code (`err_code`).
    Refused { code: u64, description: String },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    count: Option<usize>,
    error: Option<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl Answer {
    fn parse(payload: &[u8]) -> anyhow::Result<Self> {
        let raw: Raw = serde_json::from_slice(payload).with_context(|| {
            format!(
                "an answer that is no PubAck: {}",
                String::from_utf8_lossy(payload)
            )
        })?;
        Ok(match raw.error {
            Some(error) => Answer::Refused {
                code: error.err_code,
                description: error.description,
            },
            None if raw.duplicate => Answer::Duplicate { sequence: raw.seq },
            None => Answer::Stored {
                sequence: raw.seq,
                count: raw.count.unwrap_or(1),
            },
        })
    }

    /// `stored at 12`, `duplicate of 12`, `refused: 10071 wrong last sequence: 11`.
    pub fn label(&self) -> String {
        match self {
            Answer::Stored { sequence, count: 1 } => format!("stored at {sequence}"),
            Answer::Stored { sequence, count } => {
                format!("{count} stored, the last at {sequence}")
            }
            Answer::Duplicate { sequence } => format!("duplicate of {sequence}"),
            Answer::Refused { code, description } => format!("refused: {code} {description}"),
        }
    }
}

/// Publishes `message` and waits for its answer.
pub(super) async fn publish(
    client: &async_nats::Client,
    message: Message,
) -> anyhow::Result<Answer> {
    let reply = tokio::time::timeout(
        ANSWER_TIMEOUT,
        client.request_with_headers(message.subject, message.headers, message.payload),
    )
    .await
    .context("no answer in time")??;
    Answer::parse(&reply.payload)
}

/// Sends `messages` as one atomic batch and waits for the commit's answer.
pub(super) async fn publish_atomic(
    client: &async_nats::Client,
    messages: Vec<Message>,
) -> anyhow::Result<Answer> {
    let batch_id = Uuid::now_v7().simple().to_string();
    let inbox = client.new_inbox();
    let mut reply = client.subscribe(inbox.clone()).await?;
    let count = messages.len();
    for (index, mut message) in messages.into_iter().enumerate() {
        message.headers.insert("Nats-Batch-Id", batch_id.as_str());
        message
            .headers
            .insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
        if index + 1 == count {
            message.headers.insert("Nats-Batch-Commit", "1");
            client
                .publish_with_reply_and_headers(
                    message.subject,
                    inbox.clone(),
                    message.headers,
                    message.payload,
                )
                .await?;
        } else {
            client
                .publish_with_headers(message.subject, message.headers, message.payload)
                .await?;
        }
    }
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, reply.next())
        .await
        .context("no answer to the batch's commit in time")?
        .context("the connection closed")?;
    Answer::parse(&answer.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_the_server_writes_them() {
        assert_eq!(
            Answer::parse(br#"{"stream":"ORDERS","seq":2}"#).unwrap(),
            Answer::Stored {
                sequence: 2,
                count: 1
            }
        );
        assert_eq!(
            Answer::parse(br#"{"stream":"ORDERS","seq":2,"duplicate": true}"#).unwrap(),
            Answer::Duplicate { sequence: 2 }
        );
        assert_eq!(
            Answer::parse(br#"{"stream":"ORDERS","seq":7,"batch":"b1","count":3}"#).unwrap(),
            Answer::Stored {
                sequence: 7,
                count: 3
            }
        );
        let refused = Answer::parse(
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"},"stream":"ORDERS","seq":0}"#,
        )
        .unwrap();
        assert_eq!(refused.label(), "refused: 10071 wrong last sequence: 1");
    }

    #[test]
    fn a_message_loses_its_expectation_but_not_its_id() {
        let id = Uuid::now_v7();
        let message = Message::new("orders.x".into(), id, vec![])
            .expecting(3, Some("orders.>"))
            .unchecked();
        assert_eq!(
            message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned()),
            Some(id.to_string())
        );
        assert!(
            message
                .headers
                .get(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .is_none()
        );
        assert!(
            message
                .headers
                .get(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT)
                .is_none()
        );
    }
}
