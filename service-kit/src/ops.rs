//! The routers both services build the same way: their API (counted against
//! the concurrency cap), the operator endpoints (on the admin listener when
//! there is one), health and readiness on every listener, the OpenAPI
//! document on the public one, and the layers every route gets (timeout,
//! JSON fallbacks, logging of internal errors, request metrics, a body
//! limit, tracing).

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::http::{Readiness, method_not_allowed, not_found, observe};
use crate::limits::Limits;
use crate::openapi::{self, Operations};
use crate::serve::Routers;
use crate::startup::Core;

/// A service's state, as the operator endpoints read it: its [`Core`].
pub trait Ops: Clone + Send + Sync + 'static {
    fn core(&self) -> &Core;

    /// Whether the API answers its requests without the broker, so that
    /// `/readyz` need not wait for the stream's leader (the outbox and CDC
    /// keep taking orders through a broker outage and publish them later).
    fn serves_without_broker(&self) -> bool {
        false
    }

    /// Reads what `/metrics` reports from outside the process (the
    /// outbox, the broker's view of the durable consumers, the dead-letter
    /// stream), just before it renders.
    fn refresh_gauges(&self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// A service's routes, sorted by who may call them.
pub struct Routes<S> {
    /// The public API.
    pub api: Router<S>,
    /// Routes for operators only (besides `/metrics`).
    pub operator: Router<S>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body: usize,
    /// What the handlers of `api` and `operator` say of themselves, for the
    /// public listener's `GET /openapi.json`.
    pub operations: Operations,
}

/// The public router and, with `separate_admin`, the admin router.
pub fn routers<S: Ops>(
    state: S,
    limits: &Limits,
    routes: Routes<S>,
    separate_admin: bool,
) -> Routers {
    let finish = |router: Router<S>, state: S| {
        limits
            .time_limit(router)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn(observe))
            .layer(DefaultBodyLimit::max(routes.max_body))
            .layer(TraceLayer::new_for_http().make_span_with(crate::trace::http_span))
            .with_state(state)
    };
    let document = openapi::rendered(&openapi::document(routes.operations, separate_admin));
    let public = limits.shed_load(routes.api).merge(probes()).route(
        "/openapi.json",
        get(move || std::future::ready(openapi::serve(document.clone()))),
    );
    let operator = routes.operator.route("/metrics", get(metrics::<S>));
    if separate_admin {
        Routers {
            public: finish(public, state.clone()),
            admin: Some(finish(operator.merge(probes()), state)),
        }
    } else {
        Routers {
            public: finish(public.merge(operator), state),
            admin: None,
        }
    }
}

/// Health and readiness, on every listener, never shed.
fn probes<S: Ops>() -> Router<S> {
    Router::new()
        .route("/healthz", get(crate::http::live))
        .route("/readyz", get(ready::<S>))
}

async fn ready<S: Ops>(State(state): State<S>) -> Response {
    let core = state.core();
    crate::http::ready(Readiness {
        pool: &core.pool,
        nats: &core.nats,
        jetstream: &core.jetstream,
        stream: core.names.stream(),
        broker_required: !state.serves_without_broker(),
    })
    .await
}

async fn metrics<S: Ops>(State(state): State<S>) -> Response {
    state.refresh_gauges().await;
    crate::telemetry::process_metrics().collect();
    crate::http::metrics(&state.core().metrics)
}
