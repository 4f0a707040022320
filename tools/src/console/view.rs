//! What the page shows ([`View`], sent twice a second), as the page's
//! script reads it.

use serde::Serialize;
use uuid::Uuid;

/// A single order the user placed to follow.
#[derive(Debug, Clone, Serialize)]
pub struct Followed {
    pub key: String,
    pub order_id: Option<Uuid>,
    pub told: String,
    pub stored: bool,
    pub event_id: Option<Uuid>,
    pub credited_points: Option<i64>,
}

/// What the sampler read last.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub stored: i64,
    pub credited: i64,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Orders older than [`AUDIT_GRACE`](super::AUDIT_GRACE) without a credit.
    pub without_credit: i64,
}

/// A lane as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LaneView {
    pub mode: &'static str,
    pub order_service_up: bool,
    pub rewards_service_up: bool,
    pub crash_armed: bool,
    pub restarts: u64,
    pub placed: u64,
    pub in_flight: i64,
    #[serde(flatten)]
    pub sample: Sample,
    pub followed: Option<Followed>,
}

/// Everything the page shows, sent twice a second.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub seconds: f64,
    pub rate: u32,
    pub broker_up: bool,
    pub broker_delay_ms: u32,
    pub lanes: Vec<LaneView>,
    pub actions: Vec<String>,
}
