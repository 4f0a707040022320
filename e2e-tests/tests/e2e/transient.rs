//! A failure that says nothing about the event — a lock or statement
//! timeout, a serialization failure, a deadlock, a database going away —
//! never dead-letters it, however often it repeats; and what the self-read
//! projector did dead-letter reaches the order history through
//! `order-events dlq redrive`, in whatever mode order-service runs by then.

use harness::api::{
    assert_credited_exactly, assert_projected_exactly, count, metric_sum, order, place_ok,
    place_order,
};
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use super::poison::dlq_with;

/// Deliveries allowed to an event's own failures; the tests fail each
/// delivery several times as often.
const MAX_DELIVER: u64 = 2;

/// Gives every new session of `pool`'s database `setting` (e.g.
/// `lock_timeout = '200ms'`), as an operator would with `ALTER DATABASE`.
/// Set before the service starts: its pooled sessions keep what they began with.
async fn set_for_new_sessions(pool: &PgPool, setting: &str) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("reading the database name");
    sqlx::raw_sql(&format!("ALTER DATABASE \"{database}\" SET {setting}"))
        .execute(pool)
        .await
        .expect("changing the database's defaults");
}

/// Takes `table` away from everyone else until the transaction ends: the
/// service's statements on it wait, and give up after their timeout.
async fn hold_lock(pool: &PgPool, table: &str) -> Transaction<'static, Postgres> {
    let mut tx = pool
        .begin()
        .await
        .expect("beginning the lock's transaction");
    sqlx::raw_sql(&format!(
        "SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0;
         LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *tx)
    .await
    .expect("locking the table");
    tx
}

/// Waits until the service at `url` has failed deliveries three times as
/// often as `CONSUMER_MAX_DELIVER` allows an event's own failures, or has
/// dead-lettered something (which fails the test right after).
async fn wait_for_repeated_failures(env: &TestEnv, url: &str) {
    eventually("deliveries failing on the held lock", CONVERGE, || async {
        let failed = metric_sum(&env.http, url, "order_events_consumed_total").await;
        (failed >= 3 * MAX_DELIVER || env.dead_letters().await > 0).then_some(())
    })
    .await;
}

/// rewards-service's statements on `reward_accounts` fail with `setting`
/// while a test transaction holds the table, for many more deliveries than
/// `CONSUMER_MAX_DELIVER`; once it is released the event is credited once.
async fn rewards_outlasts_a_held_lock(name: &str, setting: &str) {
    let env = TestEnv::new(name).await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards_db = env.rewards_db().await;
    set_for_new_sessions(&rewards_db, setting).await;
    let rewards = env
        .rewards_service()
        .set("CONSUMER_MAX_DELIVER", MAX_DELIVER.to_string())
        .start()
        .await;
    let lock = hold_lock(&rewards_db, "reward_accounts").await;

    place_ok(
        &env.http,
        orders.url(),
        &order("lee", &[("SKU-1", 2, 1250)]),
    )
    .await;
    wait_for_repeated_failures(&env, rewards.url()).await;
    assert_eq!(
        env.dead_letters().await,
        0,
        "a timeout dead-lettered the event"
    );
    lock.rollback().await.expect("releasing the lock");

    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.dead_letters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeouts_on_every_delivery_never_dead_letter_an_event_and_it_is_credited_once_released()
 {
    rewards_outlasts_a_held_lock("transient_lock_timeout", "lock_timeout = '200ms'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeouts_on_every_delivery_never_dead_letter_an_event_and_it_is_credited_once_released()
 {
    rewards_outlasts_a_held_lock("transient_statement_timeout", "statement_timeout = '1s'").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_outlasts_lock_timeouts_and_projects_the_order_once_released() {
    let env = TestEnv::new("transient_projector_lock").await;
    let orders_db = env.orders_db().await;
    set_for_new_sessions(&orders_db, "lock_timeout = '200ms'").await;
    let orders = env
        .order_service(Mode::SelfRead)
        .set("CONSUMER_MAX_DELIVER", MAX_DELIVER.to_string())
        .start()
        .await;
    let _rewards = env.rewards_service().start().await;
    // The projector's inbox: taken by nothing on the request path.
    let lock = hold_lock(&orders_db, "processed_events").await;

    let body = order("mia", &[("SKU-1", 1, 900)]);
    let answer = place_order(&env.http, orders.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    wait_for_repeated_failures(&env, orders.url()).await;
    assert_eq!(
        env.dead_letters().await,
        0,
        "a timeout dead-lettered the event"
    );
    lock.rollback().await.expect("releasing the lock");

    assert_projected_exactly(&env, 1).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.dead_letters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_dead_letter_redriven_after_leaving_self_read_reaches_the_order_history() {
    let env = TestEnv::new("transient_projector_letter").await;
    let mut self_read = env
        .order_service(Mode::SelfRead)
        .crash_at(CrashPoint::ProjectorApplyFails)
        .set("CONSUMER_MAX_DELIVER", MAX_DELIVER.to_string())
        .start()
        .await;
    let _rewards = env.rewards_service().start().await;
    let body = order("ned", &[("SKU-1", 3, 700)]);
    let answer = place_order(&env.http, self_read.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let order_id: uuid::Uuid = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually("the projector's dead letter", CONVERGE, || async {
        (env.dead_letters().await == 1).then_some(())
    })
    .await;
    // Credited, but not in the order history: a credit without an order.
    let rewards_db = env.rewards_db().await;
    eventually("the credit", CONVERGE, || async {
        (count(&rewards_db, "reward_ledger").await == 1).then_some(())
    })
    .await;

    // The operator leaves self-read before fixing the cause; the projector's
    // durable consumer is gone, and the order is not in the history.
    self_read.kill().await;
    let _outbox = env.order_service(Mode::Outbox).start().await;
    let orders_db = env.orders_db().await;
    assert_eq!(count(&orders_db, "orders").await, 0);

    // Without order-service's database, nothing is redriven and the
    // refusal names the setting.
    let refused = tokio::process::Command::new(
        harness::service::binary_path("order-events").expect("the CLI is built"),
    )
    .env_remove("ORDERS_DATABASE_URL")
    .args(["dlq", "redrive", "--nats-url", env.nats_url()])
    .args(["--events-prefix", env.events_prefix()])
    .output()
    .await
    .expect("running order-events dlq redrive");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("ORDERS_DATABASE_URL"), "{error}");
    assert_eq!(env.dead_letters().await, 1);

    let redriven = dlq_with(
        &env,
        &["redrive"],
        &[("ORDERS_DATABASE_URL", env.orders_url())],
    )
    .await;
    assert_eq!(redriven.trim(), "redriven: 1");
    let projected: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(&orders_db)
        .await
        .unwrap();
    assert_eq!(projected, vec![order_id]);
    assert_eq!(count(&orders_db, "order_lines").await, 1);
    assert_eq!(env.dead_letters().await, 0);
    assert_credited_exactly(&env, 1).await;
}
