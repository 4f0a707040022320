//! Bad input gets a 4xx with a JSON error body and writes nothing anywhere.
//!
//! Every kind of bad input is checked in-process, case by case, by the
//! services' `http/tests.rs` (`Router::oneshot`); these cases, one of each
//! family, show end to end that a refusal writes nothing: no order, no
//! key, no outbox row, no message, no credit.

use harness::api::{count, order};
use harness::{Mode, TestEnv};
use serde_json::{Value, json};

fn lines(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1, "unit_price_minor": 1}))
            .collect(),
    )
}

/// (what, raw body, expected status, expected error code)
fn cases() -> Vec<(&'static str, String, u16, &'static str)> {
    let with = |field: &str, value: Value| {
        let mut body = order("ivy", &[("SKU-1", 1, 100)]);
        body[field] = value;
        body.to_string()
    };
    let line = |quantity: Value, price: Value| {
        with(
            "lines",
            json!([{"sku": "SKU-1", "quantity": quantity, "unit_price_minor": price}]),
        )
    };
    vec![
        (
            "malformed JSON",
            r#"{"customer_id": "ivy", "#.to_owned(),
            400,
            "malformed_json",
        ),
        (
            "unknown field",
            with("coupon", json!("FREE")),
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
            "101 lines",
            with("lines", lines(101)),
            422,
            "too_many_lines",
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
            with("customer_id", json!("x".repeat(70_000))),
            413,
            "body_too_large",
        ),
    ]
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");
    (
        status,
        body["error"]["code"]
            .as_str()
            .expect("an error code")
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_order_gets_its_4xx_and_writes_nothing() {
    let env = TestEnv::new("bad_input").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;
    let url = format!("{}/orders", orders.url());

    for (what, body, status, code) in cases() {
        let response = env
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (status, code.to_owned()),
            "{what}"
        );
    }

    let valid = order("ivy", &[("SKU-1", 1, 100)]).to_string();
    let no_content_type = env
        .http
        .post(&url)
        .body(valid.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(no_content_type).await,
        (415, "unsupported_media_type".to_owned())
    );
    let bad_key = env
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("idempotency-key", "ключ".as_bytes())
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(bad_key).await,
        (400, "invalid_idempotency_key".to_owned())
    );

    let get = |path: String| env.http.get(path).send();
    let cases = [
        (format!("{url}/not-a-uuid"), 400, "invalid_order_id"),
        (
            format!("{url}/{}", uuid::Uuid::now_v7()),
            404,
            "order_not_found",
        ),
        (format!("{url}?limit=0"), 400, "invalid_limit"),
        (
            format!("{}/customers/ivy/rewards", rewards.url()),
            404,
            "customer_not_found",
        ),
    ];
    for (path, status, code) in cases {
        assert_eq!(
            error_code(get(path.clone()).await.unwrap()).await,
            (status, code.to_owned()),
            "{path}"
        );
    }

    let orders_db = env.orders_db().await;
    for table in ["orders", "order_lines", "idempotency_keys", "outbox"] {
        assert_eq!(count(&orders_db, table).await, 0, "{table}");
    }
    let rewards_db = env.rewards_db().await;
    for table in ["reward_ledger", "reward_accounts"] {
        assert_eq!(count(&rewards_db, table).await, 0, "{table}");
    }
    assert_eq!(env.stream_messages().await, 0);
}
