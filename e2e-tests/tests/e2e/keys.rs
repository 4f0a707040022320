//! An `Idempotency-Key` means one thing in every mode: the order whose id
//! derives from the customer and the key. A retry after a switch of mode
//! answers the same order; a request whose outcome is unknown always names
//! a key that finds it out; self-read answers a keyed retry from the broker
//! when its database is down; and an instance left running in the old mode
//! after a switch stores nothing.

use std::time::Duration;

use harness::api::{assert_credited_exactly, count, order, place_order};
use harness::env::Private;
use harness::{Mode, TestEnv, eventually};
use reqwest::Response;
use serde_json::Value;

/// The status, whether the answer says it replayed, and the order's id.
async fn placed(response: Response) -> (u16, bool, String) {
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body: Value = response.json().await.expect("a JSON body");
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    (status, replayed, id)
}

fn accepted_status(mode: Mode) -> u16 {
    if mode == Mode::SelfRead { 202 } else { 201 }
}

/// Places an order under `key` in `from`, switches to `to`, and retries it
/// there: the same order, replayed, credited once; other content under
/// the key is refused.
async fn a_key_keeps_its_order_across_a_switch(name: &str, from: Mode, to: Mode) {
    let env = TestEnv::new(name).await;
    let _rewards = env.rewards_service().start().await;
    let body = order("kai", &[("SKU-1", 2, 700)]);

    let mut first = env.order_service(from).start().await;
    let response = place_order(&env.http, first.url(), &body, Some("k-1"))
        .await
        .unwrap();
    let (status, replayed, id) = placed(response).await;
    assert_eq!((status, replayed), (accepted_status(from), false));
    assert_credited_exactly(&env, 1).await;
    first.terminate(Duration::from_secs(10)).await;

    let second = env.order_service(to).start().await;
    let retry = place_order(&env.http, second.url(), &body, Some("k-1"))
        .await
        .unwrap();
    assert_eq!(
        placed(retry).await,
        (accepted_status(to), true, id.clone()),
        "a retry after switching from {from:?} to {to:?}"
    );
    let other = place_order(
        &env.http,
        second.url(),
        &order("kai", &[("SKU-2", 1, 100)]),
        Some("k-1"),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 422);

    assert_credited_exactly(&env, 1).await;
    assert_eq!(count(&env.orders_db().await, "orders").await, 1);
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_in_outbox_mode_answers_its_order_in_self_read() {
    a_key_keeps_its_order_across_a_switch("key_outbox_to_self_read", Mode::Outbox, Mode::SelfRead)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_in_self_read_answers_its_order_in_outbox_mode() {
    a_key_keeps_its_order_across_a_switch("key_self_read_to_outbox", Mode::SelfRead, Mode::Outbox)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_in_cdc_mode_answers_its_order_in_self_read() {
    a_key_keeps_its_order_across_a_switch("key_cdc_to_self_read", Mode::Cdc, Mode::SelfRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_in_self_read_answers_its_order_in_cdc_mode() {
    a_key_keeps_its_order_across_a_switch("key_self_read_to_cdc", Mode::SelfRead, Mode::Cdc).await;
}

/// A request without a key whose write is held past its time is answered
/// 504 `outcome_unknown` with a key made for it. The held write may still
/// commit, or be rolled back when the abandoned request's connection goes:
/// either way, retries with that key end with exactly one order.
async fn a_keyless_order_past_its_time_names_a_key_that_finds_it(name: &str, mode: Mode) {
    let env = TestEnv::new(name).await;
    let _rewards = env.rewards_service().start().await;
    let orders = env
        .order_service(mode)
        .set("REQUEST_TIMEOUT", "2s")
        .start()
        .await;
    let body = order("lea", &[("SKU-1", 1, 900)]);
    let pool = env.orders_db().await;

    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let response = place_order(&env.http, orders.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let header = response
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap().to_owned());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "outcome_unknown", "{answer}");
    let key = answer["idempotency_key"]
        .as_str()
        .unwrap_or_else(|| panic!("a key to retry with: {answer}"))
        .to_owned();
    assert_eq!(header.as_deref(), Some(key.as_str()));
    lock.rollback().await.unwrap();

    eventually("the held write to end", Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (waiting == 0).then_some(())
    })
    .await;
    let retry = place_order(&env.http, orders.url(), &body, Some(&key))
        .await
        .unwrap();
    let (status, _, id) = placed(retry).await;
    assert_eq!(status, 201);
    let again = place_order(&env.http, orders.url(), &body, Some(&key))
        .await
        .unwrap();
    assert_eq!(placed(again).await, (201, true, id));
    assert_eq!(count(&pool, "orders").await, 1);
    assert_credited_exactly(&env, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_outbox_order_past_its_time_names_a_key_that_finds_it() {
    a_keyless_order_past_its_time_names_a_key_that_finds_it("keyless_timeout_outbox", Mode::Outbox)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_cdc_order_past_its_time_names_a_key_that_finds_it() {
    a_keyless_order_past_its_time_names_a_key_that_finds_it("keyless_timeout_cdc", Mode::Cdc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_dual_write_order_past_its_time_names_a_key_that_finds_it() {
    a_keyless_order_past_its_time_names_a_key_that_finds_it(
        "keyless_timeout_dual_write",
        Mode::DualWrite,
    )
    .await;
}

/// Self-read with its PostgreSQL down: a keyed retry is answered from the
/// broker's duplicate answer and the stored original, well within the
/// request timeout, instead of waiting out the pool on every lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_read_answers_a_keyed_retry_from_the_broker_while_its_database_is_down() {
    let env = TestEnv::with_private("self_read_retry_without_database", Private::postgres()).await;
    let _rewards = env.rewards_service().start().await;
    let orders = env
        .order_service(Mode::SelfRead)
        .set("REQUEST_TIMEOUT", "8s")
        .start()
        .await;
    let body = order("max", &[("SKU-1", 3, 250)]);
    let first = place_order(&env.http, orders.url(), &body, Some("k-1"))
        .await
        .unwrap();
    let (status, _, id) = placed(first).await;
    assert_eq!(status, 202);
    assert_credited_exactly(&env, 1).await;

    env.stop_postgres();
    let retry = place_order(&env.http, orders.url(), &body, Some("k-1"))
        .await
        .unwrap();
    assert_eq!(placed(retry).await, (202, true, id));
    env.start_postgres();
    assert_credited_exactly(&env, 1).await;
}

/// An instance still running in the old mode after a switch stores no
/// more orders (503 `mode_switched`), so nothing it answers is left for a
/// relay or a slot that no longer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_left_running_in_the_old_mode_stores_nothing_after_a_switch() {
    let env = TestEnv::new("fenced_old_instance").await;
    let _rewards = env.rewards_service().start().await;
    let old = env.order_service(Mode::Outbox).start().await;
    let body = order("noa", &[("SKU-1", 1, 500)]);
    let response = place_order(&env.http, old.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let new = env.order_service(Mode::Cdc).start().await;
    let late = place_order(&env.http, old.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(late.status(), 503);
    let answer: Value = late.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "mode_switched", "{answer}");

    let response = place_order(&env.http, new.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(count(&env.orders_db().await, "orders").await, 2);
    assert_credited_exactly(&env, 2).await;
}
