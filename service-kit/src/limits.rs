//! What keeps a flood of requests from taking a service down: a deadline on
//! every request and a cap on the requests served at once.
//!
//! - Past `REQUEST_TIMEOUT` a request is dropped and answered 504 `timeout`.
//!   What a dropped write did is unknown (its COMMIT may have been sent), so
//!   504 is not 503: a client retries a `POST /orders` with the same
//!   `Idempotency-Key`, which resolves it.
//! - Beyond `MAX_CONCURRENT_REQUESTS` in flight, a request is refused at once
//!   with 503 `overloaded` + `Retry-After`, before anything runs: queueing
//!   would only turn overload into timeouts and memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use tokio::sync::Semaphore;

use crate::duration;
use crate::http::{error_response, unavailable};

/// Seconds a client is asked to wait after a 503 or 504.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The HTTP settings both services share (flattened into their `Config`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// Longest a request may run; past it the answer is 504 `timeout`.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub request_timeout: Duration,
    /// Requests of the public API served at once; more are refused with 503
    /// `overloaded` and `Retry-After`. Health, readiness and metrics are not counted.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
    /// A separate listener for `/metrics` and the operator endpoints, which
    /// are then NOT served on `LISTEN_ADDR`. Unset: everything on `LISTEN_ADDR`.
    #[arg(long, env = "ADMIN_LISTEN_ADDR")]
    pub admin_listen_addr: Option<SocketAddr>,
}

/// The timeout and the concurrency cap of one process, shared by its routes.
#[derive(Clone)]
pub struct Limits {
    request_timeout: Duration,
    permits: Arc<Semaphore>,
}

impl Limits {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            request_timeout: settings.request_timeout,
            permits: Arc::new(Semaphore::new(settings.max_concurrent_requests as usize)),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Counts `router`'s routes against the concurrency cap.
    pub fn shed_load<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.route_layer(from_fn_with_state(self.permits.clone(), shed))
    }

    /// Puts the request timeout on every route of `router`.
    pub fn time_limit<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(from_fn_with_state(self.request_timeout, time_limit))
    }
}

async fn shed(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire_owned() else {
        crate::meters::http_request_shed();
        return unavailable(
            "overloaded",
            "too many requests at once; retry after a moment",
            RETRY_AFTER_SECS,
        );
    };
    next.run(request).await
}

async fn time_limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            crate::meters::http_request_timed_out();
            let mut response = error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the request took too long and was abandoned; its outcome is unknown: \
                 retry (a POST /orders with the same Idempotency-Key)",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
            response
        }
    }
}
