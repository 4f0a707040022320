//! A replication slot is order-service's own, or order-service stops: a slot
//! under the remembered name that order-service did not move to where it
//! stands (recreated, advanced by someone else) is refused at start-up with
//! the resync command, while the positions a healthy life leaves behind (a
//! stop, a crash of order-service, a crash of PostgreSQL) start as before.
//! And resync finds what a lost slot skipped without comparing clocks.

use std::time::Duration;

use harness::api::{assert_credited_exactly, order, place_ok};
use harness::env::Private;
use harness::{CONVERGE, Mode, TestEnv, eventually};
use sqlx::PgPool;

use super::cdc::{place_many, resync, wait_for_active_reader};

/// The test's `orders` slot, as order-service names it.
fn slot_name(env: &TestEnv) -> String {
    format!("{}_orders_orders", env.events_prefix())
}

/// Drops the `orders` slot, once the session of a killed reader let go of it.
async fn drop_slot(db: &PgPool) {
    eventually("the slot to be dropped", CONVERGE, || async {
        sqlx::query("SELECT pg_drop_replication_slot(current_database() || '_orders')")
            .execute(db)
            .await
            .ok()
    })
    .await;
}

/// Places two orders (201) while the broker is down, so that only the slot
/// holds them, then kills order-service and starts the broker again.
async fn two_orders_only_the_slot_holds(env: &TestEnv, orders: &mut harness::service::Service) {
    wait_for_active_reader(env, "orders").await;
    env.stop_nats();
    place_ok(&env.http, orders.url(), &order("uma", &[("SKU-1", 1, 700)])).await;
    place_ok(&env.http, orders.url(), &order("vic", &[("SKU-2", 2, 350)])).await;
    orders.kill().await;
    env.start_nats();
}

/// The error order-service refuses to start with in `mode` (no backtrace, so
/// that the error is among the log lines reported).
/// Starts order-service in `mode`, asserts that it refuses to, naming the
/// position order-service confirmed and the resync command.
async fn assert_refused_until_resync(env: &TestEnv, mode: Mode) {
    let refused = env
        .order_service(mode)
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .expect("order-service refuses to start with a slot it did not move there");
    let refused = format!("{refused:#}");
    assert!(refused.contains("order-events cdc resync"), "{refused}");
    assert!(
        refused.contains("the last position order-service confirmed"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_recreated_under_the_same_name_stops_start_up_until_resync_credits_what_it_skipped()
{
    let env = TestEnv::with_private_nats("slot_recreated").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    two_orders_only_the_slot_holds(&env, &mut orders).await;

    // Dropped and made again under the same name: it starts at the end of
    // the WAL, after the two orders.
    recreate_slot(&env.orders_db().await).await;

    assert_refused_until_resync(&env, Mode::Cdc).await;

    let outcome = resync(&env).await;
    assert_eq!(outcome["orders_checked"], 2);
    assert_eq!(outcome["already_in_stream"], 0);
    assert_eq!(outcome["republished"], 2);
    assert_eq!(
        outcome["forgotten_slots"],
        serde_json::json!([slot_name(&env)])
    );

    let restarted = env.order_service(Mode::Cdc).start().await;
    assert_credited_exactly(&env, 2).await;
    place_many(&env, restarted.url(), 2, 3).await;
    assert_credited_exactly(&env, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_advanced_by_someone_else_stops_start_up_until_resync_credits_what_it_skipped() {
    let env = TestEnv::with_private_nats("slot_advanced").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    two_orders_only_the_slot_holds(&env, &mut orders).await;

    let db = env.orders_db().await;
    eventually("the slot to be advanced", CONVERGE, || async {
        sqlx::query(
            "SELECT pg_replication_slot_advance(current_database() || '_orders', \
                                                pg_current_wal_lsn())",
        )
        .execute(&db)
        .await
        .ok()
    })
    .await;

    assert_refused_until_resync(&env, Mode::Cdc).await;

    let outcome = resync(&env).await;
    assert_eq!(outcome["republished"], 2);
    assert_eq!(
        outcome["forgotten_slots"],
        serde_json::json!([slot_name(&env)])
    );
    let _restarted = env.order_service(Mode::Cdc).start().await;
    assert_credited_exactly(&env, 2).await;
}

/// Drops the `orders` slot and creates it again under the same name, at the
/// end of the WAL.
async fn recreate_slot(db: &PgPool) {
    drop_slot(db).await;
    sqlx::query(
        "SELECT pg_create_logical_replication_slot(current_database() || '_orders', 'pgoutput')",
    )
    .execute(db)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_away_from_cdc_refuses_to_drain_a_recreated_slot_until_resync() {
    let env = TestEnv::with_private_nats("slot_recreated_switch").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    two_orders_only_the_slot_holds(&env, &mut orders).await;
    recreate_slot(&env.orders_db().await).await;

    // Draining it would publish nothing and drop the proof that two orders
    // were skipped.
    assert_refused_until_resync(&env, Mode::Outbox).await;

    let outcome = resync(&env).await;
    assert_eq!(outcome["republished"], 2);
    let _outbox = env.order_service(Mode::Outbox).start().await;
    assert_credited_exactly(&env, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_order_service_moved_itself_starts_after_a_stop_a_crash_and_a_postgres_crash() {
    let env = TestEnv::with_private("slot_healthy_restarts", Private::postgres()).await;
    let _rewards = env.rewards_service().start().await;

    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 0, 3).await;
    assert_credited_exactly(&env, 3).await;
    assert!(orders.terminate(Duration::from_secs(15)).await.success());

    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 3, 6).await;
    assert_credited_exactly(&env, 6).await;
    orders.kill().await;

    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 6, 9).await;
    assert_credited_exactly(&env, 9).await;
    orders.kill().await;

    // PostgreSQL writes a slot's confirmed position to disk at checkpoints:
    // after its crash the slot may stand behind what order-service confirmed,
    // and replays.
    env.crash_postgres();
    let orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 9, 12).await;
    assert_credited_exactly(&env, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_without_since_restores_an_order_stamped_by_a_clock_far_behind_the_stream() {
    let env = TestEnv::with_private_nats("resync_clock_skew").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 0, 3).await;
    assert_credited_exactly(&env, 3).await;

    wait_for_active_reader(&env, "orders").await;
    env.stop_nats();
    let late = place_ok(&env.http, orders.url(), &order("wes", &[("SKU-1", 1, 900)])).await;
    orders.kill().await;
    env.start_nats();
    // As if an instance whose clock runs 15 minutes behind had placed it:
    // the order's time lies before the last OrderPlaced in the stream.
    let db = env.orders_db().await;
    sqlx::query("UPDATE orders SET created_at = created_at - interval '15 minutes' WHERE id = $1")
        .bind(late)
        .execute(&db)
        .await
        .unwrap();
    drop_slot(&db).await;

    let outcome = resync(&env).await;
    assert_eq!(outcome["already_in_stream"], 3);
    assert_eq!(outcome["republished"], 1);
    let _restarted = env.order_service(Mode::Cdc).start().await;
    assert_credited_exactly(&env, 4).await;
}
