//! Creating the order stream and its dead-letter stream, and making an
//! existing one fit: a stream that would lose events stops start-up (see
//! [`super::requirements`]), what can be put right without losing anything
//! is corrected, and the replicas follow `STREAM_REPLICAS`. What the
//! streams turned out to accept (atomic batches) is reported back, since
//! an older server takes the request and drops what it does not know.

use std::time::Duration;

use async_nats::jetstream::context::Context;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};

use super::{BoxError, Correction, Refusal, Review, review};
use crate::names::Names;

/// How the streams are created.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a re-publish.
    /// It is a second line of defence only; consumers deduplicate for good.
    pub duplicate_window: Duration,
    /// Copies of each stream across a cluster's servers (1 on a single
    /// server; 3 on a three-node cluster survives the loss of one node).
    /// Durable consumers keep as many
    /// ([`ensure_consumer`](super::ensure_consumer)). A stream created with
    /// another count is updated to this one at start-up.
    pub replicas: usize,
    /// Whether to let the order stream take atomic batches (`allow_atomic`,
    /// nats-server 2.12+), which [`Publisher`](super::Publisher) then sends.
    pub atomic_batches: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            atomic_batches: true,
        }
    }
}

/// What the streams turned out to accept, once set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFeatures {
    /// The order stream takes atomic batches.
    pub atomic_batches: bool,
}

/// The streams could not be created or do not have the shape we need.
#[derive(Debug, thiserror::Error)]
pub enum StreamSetupError {
    /// The broker did not answer, or refused a request: worth retrying.
    #[error("setting up stream {stream}: {source}")]
    Failed {
        stream: String,
        #[source]
        source: BoxError,
    },
    /// The stream exists with settings that would lose events (see
    /// [`review`]); retrying changes nothing until an operator acts.
    #[error(
        "stream {stream} exists with settings that would lose events; start-up stopped:{}",
        list(refusals)
    )]
    Refused {
        stream: String,
        refusals: Vec<Refusal>,
    },
}

impl StreamSetupError {
    /// Whether an operator must change the stream before a start can succeed.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

fn list(refusals: &[Refusal]) -> String {
    refusals.iter().map(|r| format!("\n  - {r}")).collect()
}

/// Creates the order stream and its dead-letter stream if they do not exist
/// (file storage), then reads their configuration back: older servers drop
/// fields they do not know instead of refusing them, and a stream made
/// before may delete events ([`review`]: refused with
/// [`StreamSetupError::Refused`], or corrected where that loses nothing). A stream with another
/// number of replicas is updated to `settings.replicas`, so that
/// `STREAM_REPLICAS` can be raised (or lowered) by restarting a service.
/// With `settings.atomic_batches`, the order stream is let take atomic
/// batches where the server can.
pub async fn ensure_streams(
    js: &Context,
    names: &Names,
    settings: &StreamSettings,
) -> Result<StreamFeatures, StreamSetupError> {
    let atomic_batches = ensure_stream(
        js,
        StreamConfig {
            name: names.stream().to_owned(),
            subjects: vec![names.stream_subjects()],
            storage: StorageType::File,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        settings.atomic_batches,
    )
    .await?;
    ensure_stream(
        js,
        StreamConfig {
            name: names.dead_letter_stream().to_owned(),
            subjects: vec![names.dead_letter_subjects()],
            storage: StorageType::File,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        },
        false,
    )
    .await?;
    Ok(StreamFeatures { atomic_batches })
}

/// The stream option that lets a stream take atomic batches (2.12+).
const ALLOW_ATOMIC: &str = "allow_atomic";

/// Creates the stream unless it exists, checks its settings ([`review`]:
/// refused if they would lose events), and updates its replicas, the
/// corrections the review asks for and, with `atomic`, [`ALLOW_ATOMIC`] in
/// one update. Returns whether the stream takes atomic batches.
///
/// async-nats 0.42 does not know `allow_atomic`, so an update is written as
/// the configuration the server sent, as JSON, with only those fields
/// changed: every field the server knows goes back as it was (a typed
/// update would clear the option). A server older than 2.12 drops the
/// field it does not know, or refuses it; then the answer is `false`.
async fn ensure_stream(
    js: &Context,
    wanted: StreamConfig,
    atomic: bool,
) -> Result<bool, StreamSetupError> {
    use async_nats::jetstream::response::Response;
    use serde_json::{Value, json};

    let fail = |source: BoxError| StreamSetupError::Failed {
        stream: wanted.name.clone(),
        source,
    };
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| fail(e.into()))?;
    let actual = stream
        .info()
        .await
        .map_err(|e| fail(e.into()))?
        .config
        .clone();
    let Review {
        refusals,
        corrections,
    } = review(&actual, &wanted);
    if !refusals.is_empty() {
        return Err(StreamSetupError::Refused {
            stream: wanted.name.clone(),
            refusals,
        });
    }

    let info: Response<Value> = js
        .request(format!("STREAM.INFO.{}", wanted.name), &json!({}))
        .await
        .map_err(|e| fail(e.into()))?;
    let mut config = match info {
        Response::Ok(info) => info["config"].clone(),
        Response::Err { error } => return Err(fail(error.into())),
    };
    let atomic_now = config[ALLOW_ATOMIC] == Value::Bool(true);
    let add_atomic = atomic && !atomic_now;
    let replicas = actual.num_replicas != wanted.num_replicas;
    if !add_atomic && !replicas && corrections.is_empty() {
        return Ok(atomic && atomic_now);
    }
    for correction in &corrections {
        correct(&wanted.name, correction, &mut config);
    }
    if replicas {
        tracing::info!(
            stream = %wanted.name,
            from = actual.num_replicas,
            to = wanted.num_replicas,
            "changing the stream's replicas"
        );
        config["num_replicas"] = json!(wanted.num_replicas);
    }
    if add_atomic {
        config[ALLOW_ATOMIC] = Value::Bool(true);
    }
    let updated: Response<Value> = js
        .request(format!("STREAM.UPDATE.{}", wanted.name), &config)
        .await
        .map_err(|e| fail(e.into()))?;
    let atomic_kept = match updated {
        Response::Ok(info) => atomic && info["config"][ALLOW_ATOMIC] == Value::Bool(true),
        // Refused for the option alone: make the other changes without it.
        Response::Err { error } if add_atomic => {
            tracing::info!(stream = %wanted.name, %error, "the server refused atomic batches");
            if replicas || !corrections.is_empty() {
                if let Some(fields) = config.as_object_mut() {
                    fields.remove(ALLOW_ATOMIC);
                }
                let retried: Response<Value> = js
                    .request(format!("STREAM.UPDATE.{}", wanted.name), &config)
                    .await
                    .map_err(|e| fail(e.into()))?;
                if let Response::Err { error } = retried {
                    return Err(fail(error.into()));
                }
            }
            false
        }
        Response::Err { error } => return Err(fail(error.into())),
    };
    if atomic && !atomic_kept {
        tracing::info!(
            stream = %wanted.name,
            "this server takes no atomic batches: publishing message by message"
        );
    }
    Ok(atomic_kept)
}

/// Writes `correction` into a stream's configuration as the server sent it,
/// and says so: an operator who set the value should learn it changed.
fn correct(stream: &str, correction: &Correction, config: &mut serde_json::Value) {
    match correction {
        Correction::RaiseDuplicateWindow { from, to } => {
            tracing::warn!(
                stream,
                from = ?from,
                to = ?to,
                "raised the stream's duplicate window to DUPLICATE_WINDOW: a shorter one lets \
                 a retry after it store an event twice"
            );
            config["duplicate_window"] =
                serde_json::json!(u64::try_from(to.as_nanos()).unwrap_or(u64::MAX));
        }
        Correction::DisallowRollups => {
            tracing::warn!(
                stream,
                "disallowed rollups on the stream: one message with a rollup header would \
                 delete its history, and nothing here sends one"
            );
            config["allow_rollup_hdrs"] = serde_json::Value::Bool(false);
        }
    }
}
