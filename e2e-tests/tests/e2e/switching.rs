//! Switching mode or relay strands nothing: whatever the previous mode left
//! unpublished — rows in the outbox, changes a replication slot had not
//! confirmed — is published before the new mode serves its first order.
//! Publishes are counted by each instance itself (`/metrics`), so a double
//! publish the broker's duplicate window hides still shows.

use harness::api::{
    assert_credited_exactly, count, order, place_into_crash, place_ok, place_order, published_by,
};
use harness::service::Service;
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use sqlx::PgPool;

/// Leaves one committed order whose outbox row was never published: the
/// polling relay's process dies right after the COMMIT.
async fn strand_an_outbox_row(env: &TestEnv) {
    let mut orders = env
        .order_service(Mode::Outbox)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
        .await;
    place_into_crash(
        &env.http,
        &mut orders,
        &order("sam", &[("SKU-1", 1, 1200)]),
        None,
    )
    .await;
    assert_eq!(count(&env.orders_db().await, "outbox").await, 1);
}

/// Places one order in the new mode (201, or 202 in self-read).
async fn place_one_more(env: &TestEnv, orders: &Service) {
    let response = place_order(
        &env.http,
        orders.url(),
        &order("tia", &[("SKU-2", 2, 300)]),
        None,
    )
    .await
    .expect("POST /orders");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Waits until `orders` counted `n` publishes of its own, then asserts exactly `n`.
async fn assert_published_by(env: &TestEnv, orders: &Service, n: u64) {
    eventually(&format!("{n} publishes"), CONVERGE, || async {
        (published_by(&env.http, orders.url()).await >= n).then_some(())
    })
    .await;
    assert_eq!(published_by(&env.http, orders.url()).await, n);
}

/// The stranded row is published before the new mode listens, and the new
/// mode then works: two orders, each credited once, each published once.
async fn pending_outbox_rows_are_published_after_switching_to(name: &str, mode: Mode) {
    let env = TestEnv::new(name).await;
    let _rewards = env.rewards_service().start().await;
    strand_an_outbox_row(&env).await;

    let orders = env.order_service(mode).start().await;
    // Drained before serving: the outbox is empty once the service listens.
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
    place_one_more(&env, &orders).await;
    assert_credited_exactly(&env, 2).await;
    assert_published_by(&env, &orders, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_outbox_rows_are_published_after_switching_to_the_cdc_relay() {
    pending_outbox_rows_are_published_after_switching_to(
        "switch_outbox_to_relay_cdc",
        Mode::OutboxCdc,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_outbox_rows_are_published_after_switching_to_cdc_mode() {
    pending_outbox_rows_are_published_after_switching_to("switch_outbox_to_cdc", Mode::Cdc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_outbox_rows_are_published_after_switching_to_self_read() {
    pending_outbox_rows_are_published_after_switching_to(
        "switch_outbox_to_self_read",
        Mode::SelfRead,
    )
    .await;
}

/// Replication slots on the test's database.
async fn slots(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits until the test's slot confirmed everything committed so far.
async fn wait_until_confirmed(db: &PgPool) {
    let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(db)
        .await
        .unwrap();
    eventually("the slot to confirm every commit", CONVERGE, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots \
             WHERE database = current_database()",
        )
        .bind(&written)
        .fetch_one(db)
        .await
        .ok()?
        .then_some(())
    })
    .await;
}

/// Runs `mode` until one order is credited, then, with NATS
/// down, commits three more that its slot cannot publish, and kills it.
async fn strand_three_orders_in_a_slot(env: &TestEnv, mode: Mode) {
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(mode).start().await;
    place_ok(&env.http, orders.url(), &order("uma", &[("SKU-1", 1, 500)])).await;
    assert_credited_exactly(env, 1).await;
    // Confirmed before NATS goes, so the drain has exactly the three to publish.
    wait_until_confirmed(&env.orders_db().await).await;

    env.stop_nats();
    for customer in ["vic", "wen", "xia"] {
        place_ok(
            &env.http,
            orders.url(),
            &order(customer, &[("SKU-1", 1, 700)]),
        )
        .await;
    }
    // Killed before NATS is back: nothing it buffered reaches the stream.
    orders.kill().await;
    env.start_nats();
}

/// Leaving a slot drains it: the three orders it held are published (by the
/// new instance, exactly once each), then the slot is dropped and forgotten.
async fn orders_held_by_the_slot_are_published_after_switching(name: &str, mode: Mode) {
    let env = TestEnv::with_private_nats(name).await;
    strand_three_orders_in_a_slot(&env, mode).await;
    let db = env.orders_db().await;
    assert_eq!(slots(&db).await, 1);

    let _rewards = env.rewards_service().start().await;
    let polling = env.order_service(Mode::Outbox).start().await;
    assert_credited_exactly(&env, 4).await;
    assert_published_by(&env, &polling, 3).await;
    // Dropped and forgotten: no WAL is retained for a slot nobody reads.
    assert_eq!(slots(&db).await, 0);
    assert_eq!(count(&db, "cdc_slots").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_the_cdc_relay_had_not_confirmed_are_published_after_switching_to_polling() {
    orders_held_by_the_slot_are_published_after_switching(
        "switch_relay_cdc_to_polling",
        Mode::OutboxCdc,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_cdc_mode_had_not_confirmed_are_published_after_switching_to_outbox() {
    orders_held_by_the_slot_are_published_after_switching("switch_cdc_to_outbox", Mode::Cdc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_while_the_old_mode_still_streams_its_slot_is_refused_and_drops_nothing() {
    let env = TestEnv::new("switch_while_cdc_runs").await;
    let _rewards = env.rewards_service().start().await;
    let cdc = env.order_service(Mode::Cdc).start().await;
    let db = env.orders_db().await;
    eventually("the cdc reader to hold its slot", CONVERGE, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT active FROM pg_replication_slots WHERE database = current_database()",
        )
        .fetch_optional(&db)
        .await
        .ok()
        .flatten()
        .filter(|active| *active)
    })
    .await;

    // Draining needs the slot, and the running cdc instance holds it.
    let refused = env
        .order_service(Mode::Outbox)
        .set("STARTUP_TIMEOUT", "2s")
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .expect("the switch is refused while the old mode runs");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("another session holds replication slot"),
        "{refused}"
    );

    // Nothing was dropped or forgotten: the cdc instance goes on.
    assert_eq!((slots(&db).await, count(&db, "cdc_slots").await), (1, 1));
    place_ok(&env.http, cdc.url(), &order("abe", &[("SKU-1", 1, 900)])).await;
    assert_credited_exactly(&env, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_accepted_in_self_read_and_not_yet_projected_reach_the_history_after_a_switch() {
    let env = TestEnv::new("switch_leave_self_read").await;
    let _rewards = env.rewards_service().start().await;
    // The projector cannot apply anything: the accepted orders wait in its
    // durable consumer when the operator switches to the outbox.
    let mut self_read = env
        .order_service(Mode::SelfRead)
        .crash_at(CrashPoint::ProjectorApplyFails)
        .set("CONSUMER_MAX_DELIVER", "1000")
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = place_order(
            &env.http,
            self_read.url(),
            &order("una", &[("SKU-1", 1, 400 + i)]),
            None,
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 202);
        let placed: serde_json::Value = response.json().await.unwrap();
        ids.push(placed["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(count(&env.orders_db().await, "orders").await, 0);
    self_read.kill().await;

    let outbox = env.order_service(Mode::Outbox).start().await;
    for id in &ids {
        let read = env
            .http
            .get(format!("{}/orders/{id}", outbox.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "order {id}");
    }
    assert_eq!(count(&env.orders_db().await, "orders").await, 3);
    let names = shared_events::Names::new(env.events_prefix()).unwrap();
    let projector: Result<async_nats::jetstream::consumer::PullConsumer, _> = env
        .jetstream()
        .await
        .get_consumer_from_stream("order-history", names.stream())
        .await;
    assert!(projector.is_err(), "the projector's consumer is deleted");
    assert_credited_exactly(&env, 3).await;
}
