//! The envelope: identity, type, version and provenance of one event.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A payload that can travel in an [`Envelope`].
pub trait Event: Serialize + DeserializeOwned {
    /// Past-tense name, e.g. `OrderPlaced`.
    const EVENT_TYPE: &'static str;
    /// Bumped on every incompatible change of the payload.
    const SCHEMA_VERSION: u32;
    /// The kind of aggregate the event is about, e.g. `Order`.
    const AGGREGATE_TYPE: &'static str;
    /// The event's place in the life of its aggregate (an order is placed,
    /// 1, before it is cancelled, 2): what a consumer applies an
    /// aggregate's events in the order of, and what lets the broker refuse
    /// one stored out of place.
    const POSITION: u32;

    /// The aggregate this event is about.
    fn aggregate_id(&self) -> Uuid;
}

/// What every message on the wire is: metadata plus one payload.
///
/// `event_id` is the identity used for deduplication: it becomes the
/// `Nats-Msg-Id` of the publish and the primary key of the consumer's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope<P> {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The event's place in its aggregate's life (`Event::POSITION`): an
    /// order's `OrderPlaced` is 1, its `OrderCancelled` 2. Events published
    /// before it was carried have none, and decode as their type's.
    #[serde(default)]
    pub position: u32,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the request that caused the event, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub payload: P,
}

impl<P: Event> Envelope<P> {
    /// Wraps `payload`; the caller chooses the id (fresh or derived, see the modes).
    pub fn new(event_id: Uuid, occurred_at: DateTime<Utc>, payload: P) -> Self {
        Self {
            event_id,
            event_type: P::EVENT_TYPE.to_owned(),
            schema_version: P::SCHEMA_VERSION,
            aggregate_type: P::AGGREGATE_TYPE.to_owned(),
            aggregate_id: payload.aggregate_id(),
            position: P::POSITION,
            occurred_at,
            traceparent: None,
            payload,
        }
    }

    /// The JSON bytes sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope of plain data always serializes")
    }
}

/// Why a message could not be read as the expected event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unexpected event type {found:?}, expected {expected:?}")]
    UnexpectedType {
        found: String,
        expected: &'static str,
    },
    #[error("unsupported schema version {found} of {event_type}, expected {expected}")]
    UnsupportedVersion {
        event_type: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("the payload does not match {event_type} v{version}: {source}")]
    Payload {
        event_type: &'static str,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("aggregate_id {envelope} differs from the payload's {payload}")]
    AggregateMismatch { envelope: Uuid, payload: Uuid },
    #[error("{event_type} is event {expected} of its order's life, not {found}")]
    WrongPosition {
        event_type: &'static str,
        found: u32,
        expected: u32,
    },
}

impl<P: Event> Envelope<P> {
    /// Decodes `bytes` as an envelope of `P`, checking type and version first
    /// so that an unknown event is reported as such, not as a payload error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw: Envelope<serde_json::Value> =
            serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if raw.event_type != P::EVENT_TYPE {
            return Err(DecodeError::UnexpectedType {
                found: raw.event_type,
                expected: P::EVENT_TYPE,
            });
        }
        if raw.schema_version != P::SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                event_type: P::EVENT_TYPE,
                found: raw.schema_version,
                expected: P::SCHEMA_VERSION,
            });
        }
        let payload: P =
            serde_json::from_value(raw.payload).map_err(|source| DecodeError::Payload {
                event_type: P::EVENT_TYPE,
                version: P::SCHEMA_VERSION,
                source,
            })?;
        if raw.position != 0 && raw.position != P::POSITION {
            return Err(DecodeError::WrongPosition {
                event_type: P::EVENT_TYPE,
                found: raw.position,
                expected: P::POSITION,
            });
        }
        if payload.aggregate_id() != raw.aggregate_id {
            return Err(DecodeError::AggregateMismatch {
                envelope: raw.aggregate_id,
                payload: payload.aggregate_id(),
            });
        }
        Ok(Envelope {
            event_id: raw.event_id,
            event_type: raw.event_type,
            schema_version: raw.schema_version,
            aggregate_type: raw.aggregate_type,
            aggregate_id: raw.aggregate_id,
            position: P::POSITION,
            occurred_at: raw.occurred_at,
            traceparent: raw.traceparent,
            payload,
        })
    }
}
