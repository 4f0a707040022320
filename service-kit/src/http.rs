//! HTTP plumbing: every error a client sees is `{"error": {"code", "message"}}`
//! with a stable `code`; internal errors reach the log, never the client.
//! Metric labels come from fixed sets only (a method outside the standard
//! ones is `other`, a path is the route's pattern), so no client input can
//! grow the metrics.
//!
//! # Layout
//! - `error`: the error body and the answers built with it.
//! - `extract`: bad input (body, query, path) answered in that body.
//! - `observe`: the middleware that logs internal errors and counts requests.
//! - `probes`: `/healthz`, `/readyz` and `/metrics`.

mod error;
mod extract;
mod observe;
pub(crate) mod probes;

pub use error::{
    ErrorBody, ErrorDetail, InternalError, error_response, internal_error, method_not_allowed,
    not_found, unavailable,
};
pub use extract::{JsonBody, path_rejection, query_rejection};
pub use observe::observe;
pub use probes::{Readiness, live, metrics, ready};
