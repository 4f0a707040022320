//! The endpoints every service has besides its API: liveness and readiness
//! (on every listener, never refused for load), and the Prometheus metrics.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorBody;

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Liveness {
    status: Alive,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Alive {
    Ok,
}

/// `/healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    operation_id = "healthz",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = Liveness)),
)]
pub async fn live() -> Response {
    Json(Liveness { status: Alive::Ok }).into_response()
}

/// What `/readyz` checks.
pub struct Readiness<'a> {
    pub pool: &'a sqlx::PgPool,
    pub nats: &'a async_nats::Client,
    pub jetstream: &'a async_nats::jetstream::Context,
    pub stream: &'a str,
    /// Whether the API needs the stream to answer (else the stream is
    /// reported, not required).
    pub broker_required: bool,
}

/// The answer of `/readyz`, 200 and 503 alike.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessReport {
    status: ReadyStatus,
    checks: ReadinessChecks,
    /// Whether the API needs the broker to take orders (self-read and
    /// dual-write): only then is `stream_leader` required to be ready.
    broker_required: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyStatus {
    Ready,
    NotReady,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReadinessChecks {
    /// PostgreSQL answered within 2 s.
    database: bool,
    /// The event stream answered within 2 s and, on a cluster, has a leader.
    stream_leader: bool,
}

/// `/readyz`: 200 when PostgreSQL answers and, if the API needs the broker,
/// the stream has a leader to take publishes (on a cluster that has lost
/// its majority it has none); otherwise 503. The body names each check.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    operation_id = "readyz",
    summary = "Readiness",
    description = "200 when PostgreSQL answers and, if the API needs the broker (self-read, dual-write), \
        the event stream has a leader to take publishes; otherwise 503. The body names each check.",
    responses(
        (status = 200, description = "Ready: the database answers and, if `broker_required`, the stream has a leader.", body = ReadinessReport),
        (status = 503, description = "Not ready; `checks` tells which check failed.", body = ReadinessReport),
        (status = 504, description = "- `timeout`: the checks (up to 2 s each) ran past `REQUEST_TIMEOUT`.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    ),
)]
pub async fn ready(checks: Readiness<'_>) -> Response {
    const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(checks.pool))
            .await
            .is_ok_and(|r| r.is_ok());
    let stream_leader = checks.nats.connection_state() == async_nats::connection::State::Connected
        && tokio::time::timeout(
            CHECK_TIMEOUT,
            stream_has_leader(checks.jetstream, checks.stream),
        )
        .await
        .unwrap_or(false);
    let ready = database && (stream_leader || !checks.broker_required);
    let (status, report) = if ready {
        (StatusCode::OK, ReadyStatus::Ready)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ReadyStatus::NotReady)
    };
    let body = ReadinessReport {
        status: report,
        checks: ReadinessChecks {
            database,
            stream_leader,
        },
        broker_required: checks.broker_required,
    };
    (status, Json(body)).into_response()
}

/// Whether the stream answers its info request and, on a cluster, names a
/// leader. (Only the leader answers; a stream that has none times out.)
async fn stream_has_leader(jetstream: &async_nats::jetstream::Context, stream: &str) -> bool {
    let Ok(mut stream) = jetstream.get_stream(stream).await else {
        return false;
    };
    match stream.info().await {
        Ok(info) => info
            .cluster
            .as_ref()
            .is_none_or(|cluster| cluster.leader.is_some()),
        Err(_) => false,
    }
}

/// `/metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operator",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The metrics, in Prometheus's text format.",
        content_type = "text/plain; version=0.0.4", body = String)),
)]
pub fn metrics(handle: &crate::telemetry::PrometheusHandle) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}
