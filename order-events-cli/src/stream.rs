//! Reading the `OrderPlaced` events the stream holds, for the audit and the
//! resync.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt as _;
use shared_events::{Envelope, Names, OrderPlaced};
use uuid::Uuid;

/// Stream messages fetched per round trip.
const PAGE: usize = 500;

/// How long reading the stream is tried again after a failure (a cluster
/// electing a leader answers 503 for a few seconds).
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// Each order whose `OrderPlaced` the stream holds, from `deliver` on, with
/// the distinct event ids it was stored under: one, unless the order was
/// published twice as two events (a redelivery of one event keeps its id).
/// A read that fails is started again from the beginning, after the
/// services' own backoff, for [`READ_PATIENCE`], saying so on stderr.
pub async fn placed_events(
    stream: &mut Stream,
    names: &Names,
    deliver: DeliverPolicy,
) -> anyhow::Result<HashMap<Uuid, BTreeSet<Uuid>>> {
    let deadline = tokio::time::Instant::now() + READ_PATIENCE;
    let mut pauses = service_kit::startup::pauses(Duration::from_secs(2));
    loop {
        match read_once(stream, names, deliver).await {
            Ok(orders) => return Ok(orders),
            Err(error) if tokio::time::Instant::now() < deadline => {
                let pause = pauses.next().unwrap_or(Duration::from_secs(2));
                eprintln!("warning: {error:#}; reading the stream again in {pause:?}");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The JetStream context at `nats_url` and the order stream named by `names`.
/// A lookup that fails for a while (no answer from a node just killed or
/// cut off, a cluster electing a leader) is tried again for
/// [`READ_PATIENCE`], saying so on stderr; a stream that is not there is an
/// error at once.
pub async fn open(
    nats_url: &str,
    names: &Names,
) -> anyhow::Result<(async_nats::jetstream::Context, Stream)> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;

    let client = service_kit::startup::connect_nats_once(nats_url, "order-events").await?;
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + READ_PATIENCE;
    let mut pauses = service_kit::startup::pauses(Duration::from_secs(2));
    loop {
        let error = match js.get_stream(names.stream()).await {
            Ok(stream) => return Ok((js, stream)),
            Err(error) => error,
        };
        let passing = match error.kind() {
            GetStreamErrorKind::Request => true,
            GetStreamErrorKind::JetStream(e) => e.error_code() != ErrorCode::STREAM_NOT_FOUND,
            _ => false,
        };
        if !passing || tokio::time::Instant::now() >= deadline {
            return Err(anyhow::Error::new(error))
                .with_context(|| format!("looking up stream {} at {nats_url}", names.stream()));
        }
        let pause = pauses.next().unwrap_or(Duration::from_secs(2));
        eprintln!(
            "warning: looking up stream {}: {error}; trying again in {pause:?}",
            names.stream()
        );
        tokio::time::sleep(pause).await;
    }
}

async fn read_once(
    stream: &mut Stream,
    names: &Names,
    deliver: DeliverPolicy,
) -> anyhow::Result<HashMap<Uuid, BTreeSet<Uuid>>> {
    let mut consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            deliver_policy: deliver,
            ack_policy: AckPolicy::None,
            filter_subject: names.order_placed_subject(),
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .context("reading the stream")?;
    let info = consumer.info().await?;
    let (name, mut remaining) = (info.name.clone(), info.num_pending);
    let mut orders: HashMap<Uuid, BTreeSet<Uuid>> = HashMap::new();
    while remaining > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(PAGE)
            .messages()
            .await
            .context("reading the stream")?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?;
            remaining = message.info().map_err(|e| anyhow::anyhow!("{e}"))?.pending;
            got += 1;
            // Anything that is not an OrderPlaced envelope credits nothing.
            if let Ok(event) = Envelope::<OrderPlaced>::decode(&message.payload) {
                orders
                    .entry(event.payload.order_id)
                    .or_default()
                    .insert(event.event_id);
            }
        }
        if got == 0 {
            bail!("the stream stopped delivering with {remaining} message(s) left to read");
        }
    }
    // It would expire on its own; no need to leave it until then.
    if let Err(error) = stream.delete_consumer(&name).await {
        eprintln!("warning: deleting the temporary consumer {name}: {error}");
    }
    Ok(orders)
}
