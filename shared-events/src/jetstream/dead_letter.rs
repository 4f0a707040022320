//! Dead letters: a message a consumer cannot process is copied to the
//! dead-letter stream with why and where in its headers, where an operator
//! can read it and send it back (`order-events dlq`).

use async_nats::HeaderMap;
use async_nats::jetstream::context::Context;
use uuid::Uuid;

use super::publish::send_with_headers;
use super::{PublishError, Published};
use crate::names::Names;

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
