//! Every kind of bad input, sent through the router in-process: no server,
//! no database, no broker, and a fake write path. The state's pool and NATS
//! client point at closed ports, and the write path counts what reaches it,
//! so an answer other than the expected 4xx (a 503, a hang) or a count
//! above zero would show that the input got past the checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use service_kit::limits::{HttpSettings, Limits};
use service_kit::startup::Core;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::{AppState, MAX_WAIT, routers};
use crate::patterns::{PlaceError, Placed, Placement, WritePath};

/// The configured cap on an order's total.
const MAX_TOTAL: i64 = 1_000_000_000;

/// A write path over a database that is not there, counting the placements
/// that reach it: bad input never does.
struct Unreachable {
    pool: sqlx::PgPool,
    reached: Arc<AtomicUsize>,
}

impl WritePath for Unreachable {
    fn place(&self, _: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>> {
        self.reached.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            let _conn = self
                .pool
                .acquire()
                .await
                .context("acquiring a database connection")?;
            unreachable!("the database is not there")
        })
    }
}

/// The public router, or the admin listener's public router with
/// `separate_admin`, over dependencies that cannot be reached.
async fn app(separate_admin: bool) -> Router {
    counting_app(separate_admin).await.0
}

/// [`app`], and how many placements reached its write path.
async fn counting_app(separate_admin: bool) -> (Router, Arc<AtomicUsize>) {
    let core = Core::unreachable().await;
    let reached = Arc::new(AtomicUsize::new(0));
    let write = Unreachable {
        pool: core.pool.clone(),
        reached: reached.clone(),
    };
    let request_timeout = Duration::from_secs(10);
    let state = AppState {
        write: Arc::new(write),
        core,
        max_order_total_minor: MAX_TOTAL,
        stopping: CancellationToken::new(),
        max_wait: AppState::max_wait_for(request_timeout),
        place_timeout: AppState::place_timeout_for(request_timeout),
    };
    let limits = Limits::new(&HttpSettings {
        request_timeout,
        max_concurrent_requests: 16,
        admin_listen_addr: None,
    });
    (routers(state, &limits, separate_admin).public, reached)
}

/// `(status, error code)` of the answer; checks that the body is the JSON error shape.
async fn send(app: Router, request: Request<Body>) -> (u16, String) {
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

fn post() -> axum::http::request::Builder {
    Request::post("/orders").header(header::CONTENT_TYPE, "application/json")
}

fn post_json(body: String) -> Request<Body> {
    post().body(Body::from(body)).expect("a request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("a request")
}

fn order() -> Value {
    json!({
        "customer_id": "ivy",
        "currency": "EUR",
        "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 100}],
    })
}

fn order_with(field: &str, value: Value) -> String {
    let mut body = order();
    body[field] = value;
    body.to_string()
}

fn line(quantity: Value, price: Value) -> String {
    order_with(
        "lines",
        json!([{"sku": "SKU-1", "quantity": quantity, "unit_price_minor": price}]),
    )
}

fn lines(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"sku": format!("S{i}"), "quantity": 1, "unit_price_minor": 1}))
        .collect()
}

#[tokio::test]
async fn each_kind_of_bad_order_body_gets_its_4xx() {
    let (app, reached) = counting_app(false).await;
    let cases = [
        (
            "malformed JSON",
            r#"{"customer_id": "ivy", "#.to_owned(),
            400,
            "malformed_json",
        ),
        (
            "wrong type",
            line(json!("two"), json!(100)),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            order_with("coupon", json!("FREE")),
            422,
            "invalid_body",
        ),
        (
            "missing field",
            r#"{"customer_id":"ivy","currency":"EUR"}"#.to_owned(),
            422,
            "invalid_body",
        ),
        (
            "zero quantity",
            line(json!(0), json!(100)),
            422,
            "invalid_quantity",
        ),
        (
            "negative quantity",
            line(json!(-2), json!(100)),
            422,
            "invalid_quantity",
        ),
        (
            "negative price",
            line(json!(1), json!(-100)),
            422,
            "negative_price",
        ),
        (
            "unknown currency",
            order_with("currency", json!("XYZ")),
            422,
            "unknown_currency",
        ),
        ("no lines", order_with("lines", json!([])), 422, "no_lines"),
        (
            "101 lines",
            order_with("lines", lines(101)),
            422,
            "too_many_lines",
        ),
        (
            "empty customer",
            order_with("customer_id", json!("")),
            422,
            "invalid_customer_id",
        ),
        (
            "NUL in customer",
            order_with("customer_id", json!("ivy\u{0}")),
            422,
            "invalid_customer_id",
        ),
        (
            "quantity above the maximum",
            line(json!(1_000_001), json!(1)),
            422,
            "invalid_quantity",
        ),
        (
            "unit price above the maximum",
            line(json!(1), json!(10_000_000_001_i64)),
            422,
            "price_too_large",
        ),
        (
            "body over 64 KiB",
            order_with("customer_id", json!("x".repeat(70_000))),
            413,
            "body_too_large",
        ),
    ];
    for (what, body, status, code) in cases {
        assert_eq!(
            send(app.clone(), post_json(body)).await,
            (status, code.to_owned()),
            "{what}"
        );
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "bad input reached the write path"
    );
}

#[tokio::test]
async fn an_order_above_the_configured_total_is_refused() {
    let mut body = order();
    body["lines"] = json!([{"sku": "SKU-1", "quantity": 1, "unit_price_minor": MAX_TOTAL + 1}]);
    assert_eq!(
        send(app(false).await, post_json(body.to_string())).await,
        (422, "total_too_large".to_owned())
    );
}

#[tokio::test]
async fn an_order_without_a_json_content_type_is_a_415() {
    let app = app(false).await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = Request::post("/orders");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Body::from(order().to_string()))
            .expect("a request");
        assert_eq!(
            send(app.clone(), request).await,
            (415, "unsupported_media_type".to_owned()),
            "{content_type:?}"
        );
    }
}

#[tokio::test]
async fn a_bad_idempotency_key_is_a_400() {
    let app = app(false).await;
    let keys: [&[u8]; 4] = [b"", "ключ".as_bytes(), &[b'k'; 256], b"a b"];
    for key in keys {
        let request = post()
            .header("idempotency-key", key)
            .body(Body::from(order().to_string()))
            .expect("a request");
        assert_eq!(
            send(app.clone(), request).await,
            (400, "invalid_idempotency_key".to_owned()),
            "{key:?}"
        );
    }
}

#[tokio::test]
async fn bad_ids_waits_and_query_values_are_400s() {
    let app = app(false).await;
    let id = Uuid::now_v7();
    // u64::MAX / 60 + 1 minutes: the number fits in 64 bits, its seconds do not.
    let overflowing = u64::MAX / 60 + 1;
    let too_long = MAX_WAIT.as_secs() + 1;
    let cases = [
        ("/orders/not-a-uuid".to_owned(), "invalid_order_id"),
        ("/orders/%00".to_owned(), "invalid_order_id"),
        (format!("/orders/{id}?wait=%00"), "invalid_wait"),
        (format!("/orders/{id}?wait=1s%00"), "invalid_wait"),
        (format!("/orders/{id}?wait=soon"), "invalid_wait"),
        (
            format!("/orders/{id}?wait=99999999999999999999m"),
            "invalid_wait",
        ),
        (format!("/orders/{id}?wait={overflowing}m"), "invalid_wait"),
        (format!("/orders/{id}?wait={}ms", u64::MAX), "invalid_wait"),
        (format!("/orders/{id}?wait={too_long}s"), "invalid_wait"),
        (format!("/orders/{id}?colour=red"), "invalid_query"),
        ("/orders?limit=0".to_owned(), "invalid_limit"),
        ("/orders?limit=501".to_owned(), "invalid_limit"),
        ("/orders?limit=%00".to_owned(), "invalid_query"),
        ("/orders?limit=-1".to_owned(), "invalid_query"),
        ("/orders?after=%00".to_owned(), "invalid_query"),
        ("/orders?after=not-a-uuid".to_owned(), "invalid_query"),
        ("/orders?colour=red".to_owned(), "invalid_query"),
        ("/orders?customer_id=%00".to_owned(), "invalid_customer_id"),
        (
            "/orders?customer_id=ivy%00".to_owned(),
            "invalid_customer_id",
        ),
    ];
    for (uri, code) in cases {
        assert_eq!(
            send(app.clone(), get(&uri)).await,
            (400, code.to_owned()),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn with_an_admin_listener_the_public_listing_needs_a_customer() {
    assert_eq!(
        send(app(true).await, get("/orders")).await,
        (400, "customer_id_required".to_owned())
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = app(false).await;
    assert_eq!(
        send(app.clone(), get("/nowhere")).await,
        (404, "not_found".to_owned())
    );
    let delete = Request::delete("/orders")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(
        send(app, delete).await,
        (405, "method_not_allowed".to_owned())
    );
}

/// `GET /openapi.json` of the public listener: 200, JSON, OpenAPI 3.1.
async fn served_document(separate_admin: bool) -> Value {
    let response = app(separate_admin)
        .await
        .oneshot(get("/openapi.json"))
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    serde_json::from_slice(&bytes).expect("a JSON document")
}

fn paths(document: &Value) -> Vec<&str> {
    document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_every_path() {
    let document = served_document(false).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    assert_eq!(
        paths(&document),
        [
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/orders",
            "/orders/{id}",
            "/readyz"
        ]
    );
    let expected = serde_json::to_value(super::openapi::document(false)).expect("a document");
    assert_eq!(document, expected);
}

#[tokio::test]
async fn with_an_admin_listener_the_public_document_leaves_out_the_operator_endpoints() {
    let document = served_document(true).await;
    assert_eq!(
        paths(&document),
        [
            "/healthz",
            "/openapi.json",
            "/orders",
            "/orders/{id}",
            "/readyz"
        ]
    );
}

/// What the router answers to `request` is what the document declares for
/// the operation `(path, method)`: a declared status, with a declared media
/// type, and with `Retry-After` if the declared response names it.
async fn assert_declared(
    app: Router,
    document: &Value,
    operation: (&str, &str),
    request: Request<Body>,
) {
    let (path, method) = operation;
    let uri = request.uri().to_string();
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16().to_string();
    let declared = &document["paths"][path][method]["responses"][&status];
    assert!(
        declared.is_object(),
        "{method} {uri} answered {status}, not declared for {method} {path}"
    );
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ASCII");
    assert!(
        declared["content"][content_type].is_object(),
        "{method} {uri}: {status} as {content_type} is not declared"
    );
    if declared["headers"]["Retry-After"].is_object() {
        assert!(
            response.headers().contains_key(header::RETRY_AFTER),
            "{method} {uri}: {status} without Retry-After"
        );
    }
}

/// Every status the router gives without a database, for each operation,
/// is one its document declares. (Those that need one are covered by the
/// e2e tests.)
#[tokio::test]
async fn the_answers_without_a_database_are_declared() {
    let document = serde_json::to_value(super::openapi::document(false)).expect("a document");
    let app = app(false).await;
    let id = Uuid::now_v7();
    let place = ("/orders", "post");
    let get_order = ("/orders/{id}", "get");
    let list = ("/orders", "get");
    let text = Request::post("/orders")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(order().to_string()))
        .expect("a request");
    let bad_key = post()
        .header("idempotency-key", "a b")
        .body(Body::from(order().to_string()))
        .expect("a request");
    let cases = [
        (place, post_json(r#"{"customer_id": "#.to_owned())),
        (place, post_json(order_with("coupon", json!("FREE")))),
        (
            place,
            post_json(order_with("customer_id", json!("x".repeat(70_000)))),
        ),
        (place, text),
        (place, bad_key),
        // Valid: it reaches the write path, whose database is not there.
        (place, post_json(order().to_string())),
        (get_order, get("/orders/not-a-uuid")),
        (get_order, get("/orders/%FF")),
        (get_order, get(&format!("/orders/{id}?wait=soon"))),
        (get_order, get(&format!("/orders/{id}"))),
        (list, get("/orders?limit=0")),
        (list, get("/orders?colour=red")),
        (list, get("/orders?customer_id=ivy")),
        (("/healthz", "get"), get("/healthz")),
        (("/readyz", "get"), get("/readyz")),
        (("/metrics", "get"), get("/metrics")),
        (("/openapi.json", "get"), get("/openapi.json")),
    ];
    for (operation, request) in cases {
        assert_declared(app.clone(), &document, operation, request).await;
    }
}
