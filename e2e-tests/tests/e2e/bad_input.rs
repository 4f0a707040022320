//! Bad input gets a 4xx with a JSON error body and writes nothing anywhere.

use e2e_tests::api::{count, order};
use e2e_tests::{Mode, TestEnv};
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
            "wrong type",
            line(json!("two"), json!(100)),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            with("coupon", json!("FREE")),
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
            with("currency", json!("XYZ")),
            422,
            "unknown_currency",
        ),
        ("no lines", with("lines", json!([])), 422, "no_lines"),
        (
            "101 lines",
            with("lines", lines(101)),
            422,
            "too_many_lines",
        ),
        (
            "invalid customer",
            with("customer_id", json!("")),
            422,
            "invalid_customer_id",
        ),
        (
            "total overflow",
            line(json!(i64::MAX / 2), json!(3)),
            422,
            "total_overflow",
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
    for key in ["", "ключ", &"k".repeat(256)] {
        let response = env
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", key.as_bytes())
            .body(valid.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (400, "invalid_idempotency_key".to_owned()),
            "{key:?}"
        );
    }

    let get = |path: String| env.http.get(path).send();
    let cases = [
        (format!("{url}/not-a-uuid"), 400, "invalid_order_id"),
        (
            format!("{url}/{}", uuid::Uuid::now_v7()),
            404,
            "order_not_found",
        ),
        (format!("{url}?limit=0"), 400, "invalid_limit"),
        (format!("{url}?colour=red"), 400, "invalid_query"),
        (format!("{}/nowhere", orders.url()), 404, "not_found"),
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

/// `(status, code)` of a JSON error answer to `GET url`.
async fn get_error(env: &TestEnv, url: &str) -> (u16, String) {
    let response = env.http.get(url).send().await.expect(url);
    error_code(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_any_query_or_path_value_is_a_400_json_error() {
    let env = TestEnv::new("nul_bytes").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;
    let (o, r) = (orders.url(), rewards.url());
    let id = uuid::Uuid::now_v7();
    let cases = [
        (format!("{o}/orders?customer_id=%00"), "invalid_customer_id"),
        (
            format!("{o}/orders?customer_id=ivy%00"),
            "invalid_customer_id",
        ),
        (format!("{o}/orders?after=%00"), "invalid_query"),
        (format!("{o}/orders?limit=%00"), "invalid_query"),
        (format!("{o}/orders/%00"), "invalid_order_id"),
        (format!("{o}/orders/{id}?wait=%00"), "invalid_wait"),
        (format!("{o}/orders/{id}?wait=1s%00"), "invalid_wait"),
        (format!("{r}/customers/%00/rewards"), "invalid_customer_id"),
        (
            format!("{r}/customers/ivy%00/rewards"),
            "invalid_customer_id",
        ),
        (format!("{r}/customers/%FF/rewards"), "invalid_path"),
        (format!("{r}/ledger?after=%00"), "invalid_query"),
        (format!("{r}/ledger?limit=%00"), "invalid_query"),
    ];
    for (url, code) in cases {
        assert_eq!(get_error(&env, &url).await, (400, code.to_owned()), "{url}");
    }
    // In a body, the same byte breaks the order's rules: 422, nothing stored.
    let mut body = order("ivy", &[("SKU-1", 1, 100)]);
    body["customer_id"] = json!("ivy\u{0}");
    let response = e2e_tests::api::place_order(&env.http, o, &body, None)
        .await
        .unwrap();
    assert_eq!(
        error_code(response).await,
        (422, "invalid_customer_id".to_owned())
    );
    assert_eq!(count(&env.orders_db().await, "orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_too_long_for_any_clock_is_a_400_and_the_service_lives_on() {
    let env = TestEnv::new("huge_wait").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let url = format!("{}/orders/{}", orders.url(), uuid::Uuid::now_v7());
    // u64::MAX / 60 + 1 minutes: the number fits in 64 bits, its seconds do not.
    let overflowing = u64::MAX / 60 + 1;
    for wait in [
        "99999999999999999999m".to_owned(),
        format!("{overflowing}m"),
        format!("{}ms", u64::MAX),
        "11s".to_owned(),
    ] {
        assert_eq!(
            get_error(&env, &format!("{url}?wait={wait}")).await,
            (400, "invalid_wait".to_owned()),
            "{wait}"
        );
    }
    assert_eq!(
        get_error(&env, &format!("{url}?wait=10ms")).await,
        (404, "order_not_found".to_owned())
    );
}
