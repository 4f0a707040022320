//! The middleware that logs internal errors inside the request's span and
//! counts requests. Metric labels come from fixed sets only (a method
//! outside the standard ones is `other`, a path is the route's pattern), so
//! no client input can grow the metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::InternalError;

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
