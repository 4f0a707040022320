use axum::extract::State;
use axum::response::Response;
use service_kit::http::Readiness;

use super::AppState;

pub use service_kit::http::live;

/// `GET /readyz`.
pub async fn ready(State(state): State<AppState>) -> Response {
    service_kit::http::ready(Readiness {
        pool: &state.pool,
        nats: &state.nats,
        jetstream: &state.jetstream,
        stream: state.names.stream(),
    })
    .await
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    service_kit::http::metrics(&state.metrics)
}
