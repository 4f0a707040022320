//! Creating the durable pull consumer a service reads the order stream
//! with, and checking that an existing one has the filter, the explicit
//! acks and the replicas it needs.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, Config as ConsumerConfig, PullConsumer, pull};
use async_nats::jetstream::context::Context;

use super::{BoxError, StreamSetupError};

/// Creates the durable pull consumer `durable` on `stream` (explicit acks,
/// one filter subject) if it does not exist, and checks
/// what the server kept: older servers silently drop fields they don't know.
/// The consumer keeps as many copies as its stream: one created before the
/// stream's replicas were raised stays at its old count unless told (the
/// server does not carry it along), so it is updated here; so is one
/// created with another filter.
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
    if actual.ack_policy != AckPolicy::Explicit {
        return Err(fail(
            format!(
                "consumer {durable} exists with {:?} acks; expected explicit acks",
                actual.ack_policy
            )
            .into(),
        ));
    }
    // A consumer created before it took what it takes now (`OrderPlaced`'s
    // subject alone, before an order's other events) is given the wanted
    // filter, and the copies of its stream; its position is kept. Servers
    // before 2.10 cannot change a filter and refuse with an error.
    if actual.filter_subject != wanted.filter_subject || actual.num_replicas != replicas {
        tracing::info!(
            consumer = durable,
            filter = %wanted.filter_subject,
            replicas,
            "updating the consumer's filter and replicas"
        );
        let _: async_nats::jetstream::consumer::Consumer<ConsumerConfig> = stream
            .update_consumer(ConsumerConfig {
                filter_subject: wanted.filter_subject.clone(),
                num_replicas: replicas,
                ..actual
            })
            .await
            .map_err(|e| fail(e.into()))?;
        consumer = stream.get_consumer(durable).await.map_err(fail)?;
        let kept = consumer
            .info()
            .await
            .map_err(|e| fail(e.into()))?
            .config
            .filter_subject
            .clone();
        if kept != wanted.filter_subject {
            return Err(fail(
                format!(
                    "consumer {durable} kept filter {kept:?} after an update to {:?}",
                    wanted.filter_subject
                )
                .into(),
            ));
        }
    }
    Ok(consumer)
}
