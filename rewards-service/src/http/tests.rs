//! Every kind of bad input, sent through the router in-process: no server,
//! no database, no broker. The state's pool and NATS client point at closed
//! ports, so an answer other than the expected 400 (a 503, a hang) would
//! show that the input got past the checks and reached a dependency.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use service_kit::limits::{HttpSettings, Limits};
use service_kit::startup::Core;
use tower::ServiceExt as _;

use super::{AppState, MAX_CUSTOMER_ID, routers};

/// The router serving everything on one listener, over dependencies that
/// cannot be reached.
async fn app() -> Router {
    let state = AppState {
        core: Core::unreachable().await,
    };
    let limits = Limits::new(&HttpSettings {
        request_timeout: Duration::from_secs(10),
        max_concurrent_requests: 16,
        admin_listen_addr: None,
    });
    routers(state, &limits, false).public
}

/// `(status, error code)` of `GET uri`; checks that the body is the JSON error shape.
async fn get(app: Router, uri: &str) -> (u16, String) {
    let request = Request::get(uri).body(Body::empty()).expect("a request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let body: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");
    let code = body["error"]["code"].as_str().expect("an error code");
    (status, code.to_owned())
}

#[tokio::test]
async fn bad_customer_ids_are_400s() {
    let app = app().await;
    let too_long = "c".repeat(MAX_CUSTOMER_ID + 1);
    let cases = [
        ("/customers/%00/rewards".to_owned(), "invalid_customer_id"),
        (
            "/customers/ivy%00/rewards".to_owned(),
            "invalid_customer_id",
        ),
        (
            format!("/customers/{too_long}/rewards"),
            "invalid_customer_id",
        ),
        ("/customers/%FF/rewards".to_owned(), "invalid_path"),
    ];
    for (uri, code) in cases {
        assert_eq!(
            get(app.clone(), &uri).await,
            (400, code.to_owned()),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn bad_ledger_queries_are_400s() {
    let app = app().await;
    let cases = [
        ("/ledger?after=%00", "invalid_query"),
        ("/ledger?after=not-a-uuid", "invalid_query"),
        ("/ledger?limit=%00", "invalid_query"),
        ("/ledger?limit=-1", "invalid_query"),
        ("/ledger?colour=red", "invalid_query"),
        ("/ledger?limit=0", "invalid_limit"),
        ("/ledger?limit=1001", "invalid_limit"),
    ];
    for (uri, code) in cases {
        assert_eq!(get(app.clone(), uri).await, (400, code.to_owned()), "{uri}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = app().await;
    assert_eq!(
        get(app.clone(), "/nowhere").await,
        (404, "not_found".to_owned())
    );
    let request = Request::post("/ledger")
        .body(Body::empty())
        .expect("a request");
    let response = app.oneshot(request).await.expect("infallible");
    assert_eq!(response.status().as_u16(), 405);
}
