//! The control: commit, then publish. It shows the problem the other modes solve.

use harness::api::{assert_credited_exactly, count, order, place_into_crash, place_ok};
use harness::{CrashPoint, Mode, TestEnv};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_credits_an_order_when_nothing_fails() {
    let env = TestEnv::new("dual_write_happy").await;
    let orders = env.order_service(Mode::DualWrite).start().await;
    let _rewards = env.rewards_service().start().await;
    place_ok(&env.http, orders.url(), &order("gus", &[("SKU-1", 2, 550)])).await;
    assert_credited_exactly(&env, 1).await;
}

/// THE PROBLEM: the order is committed, the process dies before publishing,
/// and nothing will ever publish it. The order is stored and never credited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_loses_the_event_when_the_process_dies_after_commit() {
    let env = TestEnv::new("dual_write_loss").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::DualWrite)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
        .await;

    place_into_crash(
        &env.http,
        &mut orders,
        &order("hal", &[("SKU-1", 1, 5000)]),
        None,
    )
    .await;
    let orders_db = env.orders_db().await;
    let lost: Uuid = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_one(&orders_db)
        .await
        .expect("the order was committed");

    // A later order flows normally; once it is credited and the consumer has
    // nothing left, the first order's event provably never existed.
    let restarted = env.order_service(Mode::DualWrite).start().await;
    let later = place_ok(
        &env.http,
        restarted.url(),
        &order("hal", &[("SKU-2", 1, 100)]),
    )
    .await;
    assert_credited_exactly(&env, 1).await;

    assert_eq!(count(&orders_db, "orders").await, 2);
    assert_eq!(env.stream_messages().await, 1);
    let rewards_db = env.rewards_db().await;
    let credited: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM reward_ledger")
        .fetch_all(&rewards_db)
        .await
        .unwrap();
    assert_eq!(credited, vec![later]);
    assert!(
        !credited.contains(&lost),
        "the lost order must not be credited"
    );
}
