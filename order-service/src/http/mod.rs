//! Routes. Handlers turn input into domain types first, then call the pattern.
//!
//! The public listener serves the API and its OpenAPI document (see
//! [`openapi`]); the operator endpoints (`/metrics`, unfiltered
//! `GET /orders`) go with it, or, when `ADMIN_LISTEN_ADDR` is set, to the
//! admin listener only. Health and readiness are on both.

mod error;
pub mod openapi;
mod orders;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use service_kit::limits::Limits;
use service_kit::ops::{Ops, Routes};
use service_kit::serve::Routers;
use service_kit::startup::Core;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use orders::MAX_WAIT;

use crate::patterns::WritePath;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long before the request timeout a `?wait` gives up and answers 404
/// itself, so that it is not cut off with a 504: time for its last look at
/// the database, which all waiters started together take at once.
const WAIT_MARGIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AppState {
    /// The active pattern's write path.
    pub write: Arc<dyn WritePath>,
    /// Database, NATS, stream names and metrics.
    pub core: Core,
    /// Orders above this total (minor units) are refused.
    pub max_order_total_minor: i64,
    /// Cancelled when the process stops: every `?wait` answers at once.
    pub stopping: CancellationToken,
    /// The longest a `?wait` actually waits: [`MAX_WAIT`], or less under a
    /// shorter request timeout.
    pub max_wait: Duration,
    /// The longest placing an order may take before the answer says that
    /// its outcome is unknown, with the key to retry with.
    pub place_timeout: Duration,
}

impl AppState {
    /// The cap on `?wait` for `request_timeout`: [`WAIT_MARGIN`] short of
    /// it, or half of it when it is short.
    pub fn max_wait_for(request_timeout: Duration) -> Duration {
        MAX_WAIT.min(Self::place_timeout_for(request_timeout))
    }

    /// The cap on placing an order for `request_timeout`: [`WAIT_MARGIN`]
    /// short of it (or half of it when it is short), so that a slow write
    /// is answered `outcome_unknown` with its key rather than cut off by
    /// the request timeout with none.
    pub fn place_timeout_for(request_timeout: Duration) -> Duration {
        let margin = WAIT_MARGIN.min(request_timeout / 2);
        request_timeout - margin
    }
}

/// The public router and, with `separate_admin`, the admin router. With an
/// admin listener, the public `GET /orders` needs a `customer_id`.
pub fn routers(state: AppState, limits: &Limits, separate_admin: bool) -> Routers {
    let orders = Router::new().route("/orders/{id}", get(orders::get));
    let (api, operator) = if separate_admin {
        (
            orders.route("/orders", get(orders::list_customer).post(orders::place)),
            Router::new().route("/orders", get(orders::list_all)),
        )
    } else {
        (
            orders.route("/orders", get(orders::list_all).post(orders::place)),
            Router::new(),
        )
    };
    let routes = Routes {
        api,
        operator,
        max_body: MAX_BODY_BYTES,
        operations: openapi::operations(separate_admin),
    };
    service_kit::ops::routers(state, limits, routes, separate_admin)
}

impl Ops for AppState {
    fn core(&self) -> &Core {
        &self.core
    }

    fn serves_without_broker(&self) -> bool {
        !self.write.places_through_broker()
    }

    /// The outbox's backlog and the cancellations awaiting their order (in
    /// every mode: what an earlier mode left counts too), and the broker's.
    async fn refresh_gauges(&self) {
        let waiting = tokio::time::timeout(Duration::from_secs(2), async {
            let mut conn = self.core.pool.acquire().await?;
            let backlog = crate::db::backlog::outbox(&mut conn).await?;
            let cancellations = crate::db::backlog::cancellations_awaiting_order(&mut conn).await?;
            Ok::<_, sqlx::Error>((backlog, cancellations))
        })
        .await;
        match waiting {
            Ok(Ok((backlog, cancellations))) => {
                service_kit::meters::outbox_backlog(backlog.rows, backlog.oldest);
                service_kit::meters::cancellations_awaiting_order(cancellations);
            }
            Ok(Err(error)) => tracing::debug!(%error, "reading what waits in the database"),
            Err(_) => tracing::debug!("reading what waits in the database timed out"),
        }
        self.core.refresh_broker_gauges().await;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod wait_tests {
    use super::*;

    #[test]
    fn a_wait_ends_before_the_request_timeout() {
        let cap = AppState::max_wait_for;
        assert_eq!(cap(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(cap(Duration::from_secs(30)), MAX_WAIT);
        assert_eq!(cap(Duration::from_millis(500)), Duration::from_millis(250));
        assert_eq!(cap(Duration::ZERO), Duration::ZERO);
    }
}
