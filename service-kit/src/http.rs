//! HTTP plumbing: every error a client sees is `{"error": {"code", "message"}}`
//! with a stable `code`; internal errors reach the log, never the client.
//! Metric labels come from fixed sets only (a method outside the standard
//! ones is `other`, a path is the route's pattern), so no client input can
//! grow the metrics.

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// Stable, for programs to match on; each response lists its codes.
    pub code: &'a str,
    /// For people; its wording may change.
    pub message: &'a str,
}

/// The text of an internal error, carried in the response's extensions so
/// that [`observe`] logs it inside the request's span. Never sent.
#[derive(Clone, Debug)]
pub struct InternalError(pub String);

/// A client error: `status`, a stable `code` and a human `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    (status, Json(body)).into_response()
}

/// A 500 that tells the client nothing and hands `error` to the logging middleware.
pub fn internal_error(error: &anyhow::Error) -> Response {
    let mut response = error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; the request may be retried",
    );
    response
        .extensions_mut()
        .insert(InternalError(format!("{error:#}")));
    response
}

/// A 503 with `Retry-After`, for when a dependency is down.
pub fn unavailable(code: &str, message: &str, retry_after_secs: u32) -> Response {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, code, message);
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(retry_after_secs),
    );
    response
}

/// The methods that get a label of their own; any other is `other`.
static METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// Logs internal errors and records request count and latency per route.
/// Every label comes from a fixed set: the method from [`METHODS`] or
/// `other`, the path from the router's patterns or `unmatched`.
pub async fn observe(request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(InternalError(text)) = response.extensions().get::<InternalError>() {
        tracing::error!(error = %text, "request failed");
    }
    crate::meters::http_request(method, path, response.status().as_u16(), started.elapsed());
    response
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

/// JSON 405 for known routes with the wrong method.
pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this resource",
    )
}

/// Like [`axum::Json`], but a body that cannot be read as `T` is answered
/// with the JSON error body: 400 malformed JSON, 413 too large, 415 wrong
/// content type, 422 well-formed JSON of the wrong shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let code = match rejection {
        JsonRejection::JsonDataError(_) => "invalid_body",
        JsonRejection::JsonSyntaxError(_) => "malformed_json",
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "bad_request",
    };
    error_response(status, code, &rejection.body_text())
}

/// A query string that could not be parsed, as a JSON 400.
pub fn query_rejection(rejection: &QueryRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &rejection.body_text(),
    )
}

/// A path segment that could not be parsed (e.g. not UTF-8), as a JSON 400.
pub fn path_rejection(rejection: &PathRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        &rejection.body_text(),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_standard_methods_get_a_label_of_their_own() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for invented in ["FOO", "get", "BREW", "X-1"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }
}
