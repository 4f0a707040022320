//! What a hostile or unlucky client cannot do to the HTTP side: grow the
//! metrics, exhaust the service, or get a 500 because the database is down;
//! and what operators get: a listener of their own.

use std::time::Duration;

use harness::api::{count, order, place_ok, place_order};
use harness::env::Private;
use harness::{Mode, TestEnv, eventually};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

/// `(status, Retry-After, error code)` of an answer.
pub(crate) async fn refusal(response: reqwest::Response) -> (u16, Option<String>, String) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");
    let code = body["error"]["code"].as_str().expect("a code").to_owned();
    (status, retry_after, code)
}

pub(crate) async fn metrics_text(env: &TestEnv, base_url: &str) -> String {
    let response = env
        .http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {base_url}/metrics");
    response.text().await.unwrap()
}

/// Label sets of the request-duration histogram (one `_count` line each).
fn duration_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|line| line.starts_with("order_events_http_request_duration_seconds_count{"))
        .count()
}

/// The value of an unlabelled counter, 0 when it was never incremented.
pub(crate) fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_do_not_grow_the_metrics() {
    let env = TestEnv::new("invented_methods").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let url = format!("{}/orders", orders.url());
    let invented = |i: usize| reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();

    // Every series the rest of the test can touch exists before the count.
    let first = env.http.request(invented(0), &url).send().await.unwrap();
    assert_eq!(first.status(), 405);
    metrics_text(&env, orders.url()).await;
    let before = duration_series(&metrics_text(&env, orders.url()).await);

    for i in 1..=200 {
        let response = env.http.request(invented(i), &url).send().await.unwrap();
        assert_eq!(response.status(), 405);
    }
    let after = metrics_text(&env, orders.url()).await;
    assert_eq!(duration_series(&after), before);
    assert!(
        after.contains(r#"method="other",path="/orders",status="405""#),
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_sheds_load_with_503_and_retry_after() {
    let env = TestEnv::new("shed_load").await;
    let orders = env
        .order_service(Mode::Outbox)
        .set("MAX_CONCURRENT_REQUESTS", "2")
        .start()
        .await;
    // Two slow requests take both places: waits for orders that never come.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let request = env.http.get(format!(
                "{}/orders/{}?wait=5s",
                orders.url(),
                Uuid::now_v7()
            ));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();

    // Both are in once both have looked at the database (metrics are not counted).
    eventually(
        "both slow requests to be in",
        Duration::from_secs(10),
        || async {
            let metrics = metrics_text(&env, orders.url()).await;
            (counter(&metrics, "order_events_order_lookups_total") == 2).then_some(())
        },
    )
    .await;

    let absent = format!("{}/orders/{}", orders.url(), Uuid::now_v7());
    let shed = env.http.get(&absent).send().await.unwrap();
    assert_eq!(
        refusal(shed).await,
        (503, Some("1".to_owned()), "overloaded".to_owned())
    );
    let body = order("ivy", &[("SKU-1", 1, 100)]);
    let refused = place_order(&env.http, orders.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(
        refusal(refused).await,
        (503, Some("1".to_owned()), "overloaded".to_owned())
    );
    // Probes are not counted: a saturated service still says it is alive.
    let health = env
        .http
        .get(format!("{}/healthz", orders.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    for request in slow {
        assert_eq!(request.await.unwrap(), 404);
    }
    assert_eq!(env.http.get(&absent).send().await.unwrap().status(), 404);
    // The refused order was refused before anything ran.
    assert_eq!(count(&env.orders_db().await, "orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_reads_and_orders_answer_503_with_retry_after() {
    let env = TestEnv::with_private("database_down", Private::postgres()).await;
    let orders = env
        .order_service(Mode::Outbox)
        .set("DB_ACQUIRE_TIMEOUT", "500ms")
        .start()
        .await;
    let rewards = env
        .rewards_service()
        .set("DB_ACQUIRE_TIMEOUT", "500ms")
        .start()
        .await;
    let body = order("ivy", &[("SKU-1", 1, 100)]);
    let placed = place_ok(&env.http, orders.url(), &body).await;

    env.stop_postgres();
    let unavailable = (503, Some("1".to_owned()), "database_unavailable".to_owned());
    for url in [
        format!("{}/orders/{placed}", orders.url()),
        format!("{}/orders/{placed}?wait=1s", orders.url()),
        format!("{}/orders?customer_id=ivy", orders.url()),
        format!("{}/customers/ivy/rewards", rewards.url()),
    ] {
        let response = env.http.get(&url).send().await.unwrap();
        assert_eq!(refusal(response).await, unavailable, "{url}");
    }
    let refused = place_order(&env.http, orders.url(), &body, Some("key-1"))
        .await
        .unwrap();
    assert_eq!(refusal(refused).await, unavailable, "POST /orders");

    env.restart_postgres();
    let replaced = eventually(
        "orders to be taken again",
        Duration::from_secs(20),
        || async {
            let response = place_order(&env.http, orders.url(), &body, Some("key-1"))
                .await
                .ok()?;
            (response.status() == 201).then_some(response)
        },
    )
    .await;
    assert!(replaced.headers().get("idempotent-replayed").is_none());
    let ok = env
        .http
        .get(format!("{}/orders/{placed}", orders.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The 503 stored nothing: the retry under its key was a first placement.
    assert_eq!(count(&env.orders_db().await, "orders").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_with_retry_after() {
    let env = TestEnv::new("exhausted_pool").await;
    // Dual-write has no worker: the pool's one connection is the requests'.
    let orders = env
        .order_service(Mode::DualWrite)
        .set("DB_MAX_CONNECTIONS", "1")
        .set("DB_ACQUIRE_TIMEOUT", "300ms")
        .start()
        .await;
    let body = order("ivy", &[("SKU-1", 1, 100)]);
    let id = place_ok(&env.http, orders.url(), &body).await;

    // A read held by a lock keeps the one connection busy.
    let pool = env.orders_db().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let held = {
        let request = env.http.get(format!("{}/orders/{id}", orders.url()));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    eventually(
        "the read to wait for the lock",
        Duration::from_secs(5),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting == 1).then_some(())
        },
    )
    .await;

    let unavailable = (503, Some("1".to_owned()), "database_unavailable".to_owned());
    let read = env
        .http
        .get(format!("{}/orders/{}", orders.url(), Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(read).await, unavailable, "GET /orders/{{id}}");
    let write = place_order(&env.http, orders.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(refusal(write).await, unavailable, "POST /orders");

    lock.rollback().await.unwrap();
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(count(&pool, "orders").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_answered_504_with_retry_after() {
    let env = TestEnv::new("request_timeout").await;
    let orders = env
        .order_service(Mode::Outbox)
        .set("REQUEST_TIMEOUT", "500ms")
        .start()
        .await;
    let id = place_ok(&env.http, orders.url(), &order("ivy", &[("SKU-1", 1, 100)])).await;

    // A lock on the table holds every read of it past the timeout.
    let url = format!("{}/orders/{id}", orders.url());
    let pool = env.orders_db().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let response = env
        .http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("an answer within 5 s");
    let took = started.elapsed();
    assert_eq!(
        refusal(response).await,
        (504, Some("1".to_owned()), "timeout".to_owned())
    );
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    lock.rollback().await.unwrap();

    assert_eq!(env.http.get(&url).send().await.unwrap().status(), 200);
    // A wait longer than the request timeout ends as a 404 just before it.
    let absent = format!("{}/orders/{}?wait=2s", orders.url(), Uuid::now_v7());
    assert_eq!(env.http.get(&absent).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_operator_endpoints_and_the_public_one_does_not() {
    let env = TestEnv::new("admin_listener").await;
    let orders = env
        .order_service(Mode::Outbox)
        .with_admin_listener()
        .start()
        .await;
    let rewards = env.rewards_service().with_admin_listener().start().await;
    let (orders_admin, rewards_admin) = (
        orders.admin_url().to_owned(),
        rewards.admin_url().to_owned(),
    );
    place_ok(&env.http, orders.url(), &order("ivy", &[("SKU-1", 1, 100)])).await;

    let status = |url: String| {
        let request = env.http.get(url);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Public: the API and the probes, no operator endpoints.
    assert_eq!(status(format!("{}/metrics", orders.url())).await, 404);
    assert_eq!(status(format!("{}/metrics", rewards.url())).await, 404);
    assert_eq!(status(format!("{}/ledger", rewards.url())).await, 404);
    let unfiltered = env
        .http
        .get(format!("{}/orders", orders.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal(unfiltered).await,
        (400, None, "customer_id_required".to_owned())
    );
    let mine = harness::api::get_json(
        &env.http,
        &format!("{}/orders?customer_id=ivy", orders.url()),
    )
    .await;
    assert_eq!(mine["orders"].as_array().map(Vec::len), Some(1));
    for base in [orders.url(), rewards.url()] {
        assert_eq!(status(format!("{base}/healthz")).await, 200, "{base}");
    }

    // Admin: the operator endpoints and the probes, not the API.
    let all = harness::api::get_json(&env.http, &format!("{orders_admin}/orders")).await;
    assert_eq!(all["orders"].as_array().map(Vec::len), Some(1));
    assert_eq!(status(format!("{rewards_admin}/ledger")).await, 200);
    assert_eq!(
        status(format!("{orders_admin}/orders/{}", Uuid::now_v7())).await,
        404
    );
    for base in [&orders_admin, &rewards_admin] {
        assert!(
            metrics_text(&env, base)
                .await
                .contains("order_events_http_request_duration_seconds"),
            "{base}"
        );
        assert_eq!(status(format!("{base}/healthz")).await, 200, "{base}");
    }
}
