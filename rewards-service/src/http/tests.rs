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
    // A method the document does not declare is a 405 naming the ones it does.
    assert_eq!(response.headers()[axum::http::header::ALLOW], "GET,HEAD");
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_every_path() {
    let response = app()
        .await
        .oneshot(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()[axum::http::header::CONTENT_TYPE],
        "application/json"
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let document: Value = serde_json::from_slice(&bytes).expect("a JSON document");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    let paths: Vec<&String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .collect();
    assert_eq!(
        paths,
        [
            "/customers/{id}/rewards",
            "/healthz",
            "/ledger",
            "/metrics",
            "/openapi.json",
            "/readyz"
        ]
    );
    let expected = serde_json::to_value(super::openapi::document(false)).expect("a document");
    assert_eq!(document, expected);
}

/// Every status the router gives without a database, for each operation,
/// is one its document declares, with a declared media type.
#[tokio::test]
async fn the_answers_without_a_database_are_declared() {
    let document = serde_json::to_value(super::openapi::document(false)).expect("a document");
    let app = app().await;
    let rewards = "/customers/{id}/rewards";
    let cases = [
        (rewards, "/customers/%00/rewards".to_owned()),
        (rewards, "/customers/%FF/rewards".to_owned()),
        (
            rewards,
            format!("/customers/{}/rewards", "c".repeat(MAX_CUSTOMER_ID + 1)),
        ),
        (rewards, "/customers/ivy/rewards".to_owned()),
        ("/ledger", "/ledger?limit=0".to_owned()),
        ("/ledger", "/ledger?colour=red".to_owned()),
        ("/ledger", "/ledger".to_owned()),
        ("/healthz", "/healthz".to_owned()),
        ("/readyz", "/readyz".to_owned()),
        ("/metrics", "/metrics".to_owned()),
    ];
    for (path, uri) in cases {
        let request = Request::get(&uri).body(Body::empty()).expect("a request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16().to_string();
        let declared = &document["paths"][path]["get"]["responses"][&status];
        assert!(
            declared.is_object(),
            "{uri} answered {status}, not declared"
        );
        let content_type = response.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .expect("ASCII");
        assert!(
            declared["content"][content_type].is_object(),
            "{uri}: {status} as {content_type} is not declared"
        );
    }
}
