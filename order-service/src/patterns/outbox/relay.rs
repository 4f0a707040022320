//! The outbox relay: one step publishes one batch; [`Relay::run`] loops the
//! step, and when the outbox is empty waits until this process commits an
//! order ([`Relay::waker`]) or the poll interval passes.
//!
//! Why not LISTEN/NOTIFY: a `NOTIFY` in the order's transaction takes a
//! lock on the server's notification queue at COMMIT, which serialises every
//! commit of the database behind it (measured: about 3,200 commits/s with the
//! trigger, 9,000 without, the same statement at the same concurrency). The
//! relay lives in the process that writes the orders, so that process wakes
//! it directly. Rows written by another instance are relayed by that
//! instance's relay; rows left by an instance that died are picked up by
//! the next step of any relay, at the latest after the poll interval.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sql;
use service_kit::crash::crash_point;
use service_kit::startup::{pauses, retry_until};
use service_kit::trace::PublishSpans;
use shared_events::jetstream::{Outgoing, Publisher};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest one step may take. Every publish is bounded by the JetStream
/// ack timeout, but a send into a connection the client has not yet found
/// dead (a broker node cut off) is not; and while a step waits, its
/// transaction holds its rows and holds back every replication slot
/// created on the server. Past this the step is dropped, rolling back.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many rows were published, acknowledged and deleted.
    Published(usize),
    /// Nothing was waiting.
    Empty,
}

pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    batch_size: i64,
    poll_interval: Duration,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        publisher: Publisher,
        batch_size: i64,
        poll_interval: Duration,
    ) -> Self {
        Self {
            pool,
            publisher,
            batch_size,
            poll_interval,
            wake: Arc::new(Notify::new()),
        }
    }

    /// What the write path notifies after committing an outbox row. A
    /// notification while the relay is busy is kept, so none is lost.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Claims a batch, publishes it (one atomic batch where the stream takes
    /// them, else all sends first, then all acks), and deletes it in the
    /// claiming transaction.
    /// On any error the transaction rolls back and the rows wait for a retry.
    #[tracing::instrument(name = "relay_batch", skip_all, fields(rows = tracing::field::Empty))]
    pub async fn relay_next_batch(&self) -> anyhow::Result<Step> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning the relay transaction")?;
        let rows = sql::claim_batch(&mut tx, self.batch_size)
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            return Ok(Step::Empty);
        }
        tracing::Span::current().record("rows", rows.len());
        // The DELETE is the one write a crash may lose: each step would
        // otherwise wait for a flush of its own.
        sql::commit_without_waiting_for_disk(&mut tx)
            .await
            .context("relaxing the relay's commit")?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(Outgoing {
                subject: row.subject.clone(),
                event_id: row.event_id,
                payload: serde_json::to_vec(&row.payload)
                    .context("serializing an outbox payload")?,
                traceparent: row.traceparent.clone(),
            });
        }
        service_kit::meters::publish_batch("outbox", events.len());
        let spans = PublishSpans::start(&mut events);
        // Counted before anything can fail: a publish repeated after a
        // failed DELETE is counted twice, as it happened.
        let confirmed = match self.publisher.send_batch(events).await {
            Ok(sent) => sent.confirmed().await,
            Err(error) => {
                spans.end(Some(&error));
                return Err(error.into());
            }
        };
        let (new, duplicates) = (confirmed.new, confirmed.duplicates);
        service_kit::meters::published("outbox", new, duplicates);
        let confirmed = confirmed.result();
        spans.end_with(&confirmed);
        confirmed?;
        crash_point("after_publish_before_mark");

        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        sql::delete(&mut tx, &seqs)
            .await
            .context("deleting published outbox rows")?;
        tx.commit()
            .await
            .context("committing the relay transaction")?;
        tracing::debug!(new, duplicates, "outbox batch published");

        Ok(Step::Published(rows.len()))
    }

    /// Publishes every row waiting in the outbox, one step at a time until
    /// the outbox is empty, retrying a failed step until `deadline`; returns
    /// how many rows it published. Runs at start-up, before any order is
    /// served, so a switch of mode or relay strands nothing in the table.
    pub async fn drain(&self, deadline: Instant) -> anyhow::Result<usize> {
        let mut published = 0;
        loop {
            let step = retry_until(deadline, "publishing the rows left in the outbox", || {
                self.relay_next_batch()
            })
            .await?;
            match step {
                Step::Published(n) => published += n,
                Step::Empty => return Ok(published),
            }
        }
    }

    /// Relays until `shutdown` is cancelled. A batch in hand is finished (its
    /// publishes are bounded by the JetStream ack timeout) before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(batch_size = self.batch_size, "outbox relay started");
        let mut pauses = pauses(MAX_BACKOFF);
        while !shutdown.is_cancelled() {
            let step = tokio::time::timeout(STEP_TIMEOUT, self.relay_next_batch())
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "a relay step did not finish within {STEP_TIMEOUT:?}; rolled back"
                    ))
                });
            match step {
                Ok(Step::Published(_)) => pauses = service_kit::startup::pauses(MAX_BACKOFF),
                Ok(Step::Empty) => {
                    pauses = service_kit::startup::pauses(MAX_BACKOFF);
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(self.poll_interval) => {}
                        () = self.wake.notified() => {}
                    }
                }
                Err(error) => {
                    service_kit::meters::relay_error();
                    let pause = pauses.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = format!("{error:#}"), retry_in = ?pause, "outbox relay step failed");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }
}
