//! What a service holds once connected, shared by its HTTP handlers and its
//! background tasks, and the broker gauges read through it for `/metrics`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt as _;
use shared_events::Names;
use shared_events::jetstream::Publisher;
use sqlx::PgPool;

use crate::telemetry::PrometheusHandle;

/// What a service has once it is connected: its migrated database, NATS
/// with the streams in place, and the metrics recorder.
#[derive(Clone)]
pub struct Core {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    /// Publishes in batches where the stream takes them.
    pub publisher: Publisher,
    pub names: Names,
    pub metrics: PrometheusHandle,
    /// The durable consumers `/metrics` reported last.
    pub reported_consumers: Arc<Mutex<BTreeSet<String>>>,
}

/// How long `/metrics` waits for one answer of the broker or the database
/// before it renders without it (the gauge keeps its last value).
const GAUGE_TIMEOUT: Duration = Duration::from_secs(2);

impl Core {
    /// Reads, for every durable consumer of the order stream, the broker's
    /// count of messages not yet delivered and of those awaiting their ack,
    /// and the dead-letter stream's depth, into their gauges. Each service
    /// reports every consumer, so that a consumer whose service is down is
    /// still seen falling behind. What cannot be read in time keeps its
    /// last value.
    pub async fn refresh_broker_gauges(&self) {
        let consumers = tokio::time::timeout(GAUGE_TIMEOUT, async {
            let stream = self
                .jetstream
                .get_stream_no_info(self.names.stream())
                .await?;
            let consumers: Vec<_> = stream.consumers().try_collect().await?;
            Ok::<_, anyhow::Error>(consumers)
        })
        .await;
        match consumers {
            Ok(Ok(consumers)) => {
                let durable: BTreeSet<String> = consumers
                    .iter()
                    .filter(|info| info.config.durable_name.is_some())
                    .map(|info| info.name.clone())
                    .collect();
                for info in consumers.iter().filter(|info| durable.contains(&info.name)) {
                    crate::meters::consumer_backlog(
                        &info.name,
                        info.num_pending,
                        info.num_ack_pending,
                    );
                }
                // A consumer that was deleted has no backlog left to report.
                let mut reported = self
                    .reported_consumers
                    .lock()
                    .expect("reported consumers lock");
                for gone in reported.difference(&durable) {
                    crate::meters::consumer_backlog(gone, 0, 0);
                }
                *reported = durable;
            }
            Ok(Err(error)) => tracing::debug!(%error, "reading the consumers' backlog"),
            Err(_) => tracing::debug!("reading the consumers' backlog timed out"),
        }
        let depth = tokio::time::timeout(GAUGE_TIMEOUT, async {
            let mut stream = self
                .jetstream
                .get_stream(self.names.dead_letter_stream())
                .await?;
            Ok::<_, anyhow::Error>(stream.info().await?.state.messages)
        })
        .await;
        match depth {
            Ok(Ok(messages)) => crate::meters::dead_letters(messages),
            Ok(Err(error)) => tracing::debug!(%error, "reading the dead-letter stream's depth"),
            Err(_) => tracing::debug!("reading the dead-letter stream's depth timed out"),
        }
    }
}
