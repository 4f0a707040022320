//! Self-read: publish first; order-service writes its history from its own
//! event, rewards-service credits from the same event.

use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::api::{
    assert_credited_exactly, assert_projected_exactly, count, get_json, order, place_into_crash,
    place_order, place_racing_a_crash,
};
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use serde_json::Value;

async fn place_accepted(env: &TestEnv, url: &str, body: &Value, key: Option<&str>) -> Value {
    let response = place_order(&env.http, url, body, key)
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), 202);
    response.json().await.expect("an order body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_read_projects_and_credits_two_hundred_concurrent_orders_once() {
    let env = TestEnv::new("self_read_200").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let _rewards = env.rewards_service().start().await;

    join_all((0..200).map(|i| {
        let body = order(&format!("c{}", i % 10), &[("SKU-1", 1, 1000 + i)]);
        let key = (i % 2 == 0).then(|| format!("key-{i}"));
        let url = orders.url().to_owned();
        let env = &env;
        async move { place_accepted(env, &url, &body, key.as_deref()).await }
    }))
    .await;

    assert_projected_exactly(&env, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_read_its_own_write_with_a_bounded_wait() {
    let env = TestEnv::new("self_read_wait").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let accepted =
        place_accepted(&env, orders.url(), &order("jo", &[("SKU-1", 2, 300)]), None).await;
    let id = accepted["id"].as_str().unwrap();
    let read: Value = get_json(&env.http, &format!("{}/orders/{id}?wait=5s", orders.url())).await;
    assert_eq!(read, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_past_the_puback_places_one_order() {
    let env = TestEnv::new("self_read_crash_after_publish").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::SelfRead)
        .crash_at(CrashPoint::SelfReadAfterPublish)
        .start()
        .await;
    let body = order("kim", &[("SKU-1", 1, 2500)]);

    place_into_crash(&env.http, &mut orders, &body, Some("kim-1")).await;

    // The client retries with the same key: the same event id is published,
    // the broker reports a duplicate, and the same order is answered.
    let restarted = env.order_service(Mode::SelfRead).start().await;
    let retry = place_order(&env.http, restarted.url(), &body, Some("kim-1"))
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");

    assert_projected_exactly(&env, 1).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
    let retried: Value = retry.json().await.unwrap();
    let stored: Value = get_json(
        &env.http,
        &format!(
            "{}/orders/{}",
            restarted.url(),
            retried["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(stored["customer_id"], "kim");
    assert_eq!(stored["total_minor"], 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_crash_between_commit_and_ack_leaves_one_order() {
    let env = TestEnv::new("self_read_projector_crash").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::SelfRead)
        .crash_at(CrashPoint::ProjectorAfterCommitBeforeAck)
        .start()
        .await;

    place_racing_a_crash(&env.http, &mut orders, &order("lee", &[("SKU-1", 1, 700)])).await;
    assert_eq!(count(&env.orders_db().await, "orders").await, 1);

    // Redelivered to the restarted projector, which finds it in its inbox.
    let _restarted = env.order_service(Mode::SelfRead).start().await;
    assert_projected_exactly(&env, 1).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(count(&env.orders_db().await, "processed_events").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_orders_are_refused_and_never_appear() {
    let env = TestEnv::with_private_nats("self_read_nats_down").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let _rewards = env.rewards_service().start().await;

    env.stop_nats();
    // Once order-service knows the connection is down (its readiness says
    // so), a request is refused before anything is sent.
    eventually("order-service to see NATS down", CONVERGE, || async {
        let ready = get_json(&env.http, &format!("{}/readyz", orders.url())).await;
        (ready["checks"]["stream_leader"] == false).then_some(())
    })
    .await;
    let started = Instant::now();
    let refused = place_order(
        &env.http,
        orders.url(),
        &order("max", &[("SKU-1", 1, 900)]),
        None,
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "broker_unavailable");
    // With the client's key nothing is sent either, but an earlier request
    // under that key may have been stored: the outcome is unknown, not "no".
    let keyed = place_order(
        &env.http,
        orders.url(),
        &order("max", &[("SKU-3", 1, 900)]),
        Some("max-1"),
    )
    .await
    .unwrap();
    assert_eq!(keyed.status(), 504);
    assert_eq!(keyed.headers()["retry-after"], "1");

    // NATS comes back; the services reconnect by themselves and orders flow.
    env.start_nats();
    let later = eventually("order-service to accept orders again", CONVERGE, || async {
        let response = place_order(
            &env.http,
            orders.url(),
            &order("max", &[("SKU-2", 1, 100)]),
            Some("max-2"),
        )
        .await
        .ok()?;
        (response.status() == 202).then_some(())
    })
    .await;
    let () = later;

    assert_projected_exactly(&env, 1).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
    let total: i64 = sqlx::query_scalar("SELECT total_minor FROM orders")
        .fetch_one(&env.orders_db().await)
        .await
        .unwrap();
    assert_eq!(
        total, 100,
        "only the order placed after NATS returned exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_and_rewards_killed_mid_stream_lose_and_double_nothing() {
    let env = TestEnv::new("self_read_restarts").await;
    let mut orders = env.order_service(Mode::SelfRead).start().await;
    let mut rewards = env.rewards_service().start().await;
    let place = |url: String, from: i64, to: i64| {
        let env = &env;
        join_all((from..to).map(move |i| {
            let body = order(&format!("c{}", i % 7), &[("SKU-1", 1, 300)]);
            let url = url.clone();
            async move { place_accepted(env, &url, &body, Some(&format!("k{i}"))).await }
        }))
    };

    place(orders.url().to_owned(), 0, 100).await;
    orders.kill().await;
    rewards.kill().await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let _rewards = env.rewards_service().start().await;
    place(orders.url().to_owned(), 100, 200).await;

    assert_projected_exactly(&env, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
}
