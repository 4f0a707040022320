//! The broker's own limit, measured on the same nats-server as a mode's run
//! (same settings: file storage, `sync_interval: always` where the server
//! knows it), into a stream of its own: how many events per second JetStream
//! stores and acknowledges when nothing else is in the way.
//!
//! - **single, pipelined**: one publisher keeps [`WINDOW`] publishes
//!   awaiting their PubAck, each message on its own — what every publisher
//!   did before batches, and what a server older than 2.12 still gets.
//! - **atomic batches** of [`SMALL_BATCH`] and [`LARGE_BATCH`] events, one
//!   batch at a time, through the services' own [`Publisher`].

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use serde::Serialize;
use shared_events::jetstream::{self, Outgoing, Publisher};
use shared_events::{Names, StreamSettings};
use uuid::Uuid;

/// Publishes awaiting their PubAck at once in the single-publish run.
pub const WINDOW: usize = 256;
pub const SMALL_BATCH: usize = 100;
pub const LARGE_BATCH: usize = 500;

/// Events per second the broker stored and acknowledged, each way.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerLimits {
    pub server_version: String,
    pub single_pipelined_per_s: f64,
    /// `None` where the server takes no atomic batches.
    pub batch_100_per_s: Option<f64>,
    pub batch_500_per_s: Option<f64>,
}

/// Runs each way for `each`, on the server at `url`.
pub async fn limits(url: &str, each: Duration) -> anyhow::Result<BrokerLimits> {
    let client = async_nats::connect(url).await?;
    let names = Names::new("broker_limit")?;
    let features = jetstream::ensure_streams(
        &async_nats::jetstream::new(client.clone()),
        &names,
        &StreamSettings::default(),
    )
    .await?;
    let single = Publisher::new(client.clone(), false);
    let batching = Publisher::new(client.clone(), true);
    let subject = names.order_placed_subject();

    let single_pipelined_per_s = pipelined(&single, &subject, each).await?;
    let (batch_100_per_s, batch_500_per_s) = if features.atomic_batches {
        (
            Some(batches(&batching, &subject, SMALL_BATCH, each).await?),
            Some(batches(&batching, &subject, LARGE_BATCH, each).await?),
        )
    } else {
        (None, None)
    };
    Ok(BrokerLimits {
        server_version: client.server_info().version,
        single_pipelined_per_s,
        batch_100_per_s,
        batch_500_per_s,
    })
}

/// A payload the size of an `OrderPlaced` of two lines (about 400 bytes).
fn event(subject: &str) -> Outgoing {
    Outgoing {
        subject: subject.to_owned(),
        event_id: Uuid::now_v7(),
        payload: vec![b'x'; 400],
        traceparent: None,
    }
}

async fn pipelined(publisher: &Publisher, subject: &str, each: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut in_flight = FuturesOrdered::new();
    let mut acknowledged = 0u64;
    while start.elapsed() < each {
        while in_flight.len() < WINDOW {
            let event = event(subject);
            let ack = jetstream::send(
                publisher.jetstream(),
                event.subject,
                event.event_id,
                None,
                event.payload,
            )
            .await?;
            in_flight.push_back(ack.confirmed());
        }
        if let Some(done) = in_flight.next().await {
            done?;
            acknowledged += 1;
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
        acknowledged += 1;
    }
    Ok(acknowledged as f64 / start.elapsed().as_secs_f64())
}

async fn batches(
    publisher: &Publisher,
    subject: &str,
    size: usize,
    each: Duration,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut stored = 0u64;
    while start.elapsed() < each {
        let batch = (0..size).map(|_| event(subject)).collect();
        let confirmed = publisher.send_batch(batch).await?.confirmed().await;
        stored += confirmed.new;
        confirmed.result()?;
    }
    Ok(stored as f64 / start.elapsed().as_secs_f64())
}
