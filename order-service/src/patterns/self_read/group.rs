//! Group commit on self-read's request path: the events of concurrent
//! requests share one publish.
//!
//! Each request waits for its own PubAck, and with `sync_interval: always`
//! the broker flushes to disk before each one: requests publishing one by one
//! are bounded by those flushes. Here, one task takes the requests' events
//! off a queue and sends whatever has gathered as one atomic batch (one
//! flush, one PubAck) as soon as fewer than [`MAX_IN_FLIGHT`] batches await
//! theirs; under light load each request still goes alone, at once. Each
//! request is answered with its own event's outcome: stored at its sequence,
//! a duplicate (a batch holding one is published message by message), or no
//! PubAck.

use std::future::Future;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use shared_events::Published;
use shared_events::jetstream::{MAX_ATOMIC_BATCH, Outgoing, PublishError, Publisher};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Batches awaiting their PubAck at once; requests arriving meanwhile
/// gather into the next batch.
const MAX_IN_FLIGHT: usize = 4;

type Answer = Result<Published, PublishError>;

struct Request {
    event: Outgoing,
    answer: oneshot::Sender<Answer>,
}

/// The queue in front of the batching task. The task ends once every
/// `GroupPublisher` is dropped and what it holds is answered.
pub struct GroupPublisher {
    requests: mpsc::Sender<Request>,
}

impl GroupPublisher {
    /// Starts the task that publishes through `publisher`.
    pub fn start(publisher: Publisher) -> Self {
        let (requests, queue) = mpsc::channel(MAX_ATOMIC_BATCH);
        tokio::spawn(run(publisher, queue));
        Self { requests }
    }

    /// Queues `event`; the returned future is its PubAck. An error here
    /// means nothing was sent.
    pub async fn send(
        &self,
        event: Outgoing,
    ) -> Result<impl Future<Output = Answer> + Send + 'static, PublishError> {
        let event_id = event.event_id;
        let (answer, answered) = oneshot::channel();
        self.requests
            .send(Request { event, answer })
            .await
            .map_err(|_| PublishError::Send {
                event_id,
                source: "the publishing task has stopped".into(),
            })?;
        Ok(async move {
            answered.await.unwrap_or_else(|_| {
                Err(PublishError::Ack {
                    event_id,
                    source: "the publishing task stopped before the PubAck".into(),
                })
            })
        })
    }
}

async fn run(publisher: Publisher, mut queue: mpsc::Receiver<Request>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_ATOMIC_BATCH
                    && let Ok(more) = queue.try_recv()
                {
                    batch.push(more);
                }
                let answering = publish(&publisher, batch).await;
                in_flight.push(answering);
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends `batch`; the returned future answers each request once the
/// PubAcks are in.
async fn publish(publisher: &Publisher, batch: Vec<Request>) -> impl Future<Output = ()> + use<> {
    let (events, answers): (Vec<Outgoing>, Vec<_>) =
        batch.into_iter().map(|r| (r.event, r.answer)).unzip();
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    let sent = publisher.send_batch(events).await;
    async move {
        match sent {
            Ok(sent) => {
                for (answer, outcome) in answers.into_iter().zip(sent.each().await) {
                    let _ = answer.send(outcome);
                }
            }
            // Some of them may have gone out before the send that failed:
            // the outcome of each is unknown, not "not sent".
            Err(error) => {
                let reason = error.to_string();
                for (answer, event_id) in answers.into_iter().zip(ids) {
                    let _ = answer.send(Err(PublishError::Ack {
                        event_id,
                        source: reason.clone().into(),
                    }));
                }
            }
        }
    }
}
