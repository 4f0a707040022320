//! Change data capture: the `orders` table is the source of events, and the
//! outbox can be relayed the same way.

use e2e_tests::api::{
    assert_credited_exactly, count, order, place_into_crash, place_ok, place_order,
};
use e2e_tests::env::{CONVERGE, Private};
use e2e_tests::service::Service;
use e2e_tests::{TestEnv, eventually};
use futures::future::join_all;
use sqlx::PgPool;

const CDC_RELAY: &[(&str, &str)] = &[("OUTBOX_RELAY", "cdc")];

async fn place_many(env: &TestEnv, url: &str, from: usize, to: usize) {
    join_all((from..to).map(|i| {
        let body = order(
            &format!("c{}", i % 10),
            &[("SKU-1", 1, 1000 + i as i64), ("SKU-2", 2, 250)],
        );
        let (http, url) = (env.http.clone(), url.to_owned());
        async move { place_ok(&http, &url, &body).await }
    }))
    .await;
}

/// Whether some session holds the slot `<db>_<suffix>`.
async fn slot_active(orders_db: &PgPool, suffix: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT active FROM pg_replication_slots WHERE slot_name = current_database() || '_' || $1",
    )
    .bind(suffix)
    .fetch_optional(orders_db)
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

async fn wait_for_active_reader(env: &TestEnv, suffix: &str) {
    let db = env.orders_db().await;
    eventually("a reader to hold the slot", CONVERGE, || async {
        slot_active(&db, suffix).await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_credits_two_hundred_concurrent_orders_once() {
    let env = TestEnv::new("cdc_200").await;
    let orders = env.order_service("cdc").await;
    let _rewards = env.rewards_service().await;
    place_many(&env, orders.url(), 0, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdc_crash_between_puback_and_confirm_is_replayed_and_absorbed() {
    let env = TestEnv::new("cdc_crash_before_confirm").await;
    let _rewards = env.rewards_service().await;
    let mut orders = env
        .order_service_with("cdc", Some("cdc_before_confirm=return"))
        .await;

    // Answered 201; the reader publishes it, gets the PubAck and dies before
    // confirming the slot.
    place_ok(
        &env.http,
        orders.url(),
        &order("nia", &[("SKU-1", 1, 1500)]),
    )
    .await;
    orders.assert_crashed().await;

    // The restarted reader streams the transaction again: the same event id,
    // dropped by the broker as a duplicate.
    let _restarted = env.order_service("cdc").await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_committed_before_a_crash_is_captured_after_restart() {
    let env = TestEnv::new("cdc_crash_after_commit").await;
    let _rewards = env.rewards_service().await;
    let mut orders = env
        .order_service_with("cdc", Some("after_commit_before_publish=return"))
        .await;
    place_into_crash(
        &env.http,
        &mut orders,
        &order("oli", &[("SKU-1", 1, 800)]),
        None,
    )
    .await;
    let _restarted = env.order_service("cdc").await;
    assert_credited_exactly(&env, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_takes_over_when_the_active_reader_dies() {
    let env = TestEnv::new("cdc_takeover").await;
    let _rewards = env.rewards_service().await;
    let mut first = env.order_service("cdc").await;
    wait_for_active_reader(&env, "orders").await;
    // The second instance finds the slot held (55006) and stands by; it
    // serves HTTP all the same.
    let second = env.order_service("cdc").await;

    place_many(&env, second.url(), 0, 100).await;
    first.kill().await;
    // Orders keep arriving while the standby takes the slot over.
    place_many(&env, second.url(), 100, 150).await;
    let _first_again = env.order_service("cdc").await;
    place_many(&env, second.url(), 150, 200).await;

    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_reconnects_after_postgres_restarts_mid_stream() {
    let env = TestEnv::with_private(
        "cdc_postgres_restart",
        Private {
            postgres: true,
            ..Private::default()
        },
    )
    .await;
    let orders = env.order_service("cdc").await;
    let _rewards = env.rewards_service().await;
    place_many(&env, orders.url(), 0, 50).await;

    env.restart_postgres();
    // The services' pools reconnect on their own: each order is retried
    // until it is taken, and the only failures meanwhile are transient 500s.
    for _ in 50..100 {
        eventually("order-service to take orders again", CONVERGE, || async {
            let body = order("pat", &[("SKU-1", 1, 100)]);
            let response = place_order(&env.http, orders.url(), &body, None)
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                status == 201 || status == 500,
                "only transient failures while reconnecting, got {status}"
            );
            (status == 201).then_some(())
        })
        .await;
    }
    assert_credited_exactly(&env, 100).await;
    assert_eq!(env.stream_messages().await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_does_not_retain_wal_while_other_tables_are_busy() {
    let env = TestEnv::with_private(
        "cdc_idle_slot",
        Private {
            postgres: true,
            ..Private::default()
        },
    )
    .await;
    let _orders = env.order_service("cdc").await;
    wait_for_active_reader(&env, "orders").await;
    let db = env.orders_db().await;
    sqlx::raw_sql("CREATE TABLE noise (id bigserial PRIMARY KEY, body text NOT NULL)")
        .execute(&db)
        .await
        .unwrap();

    // 20,000 rows in 200 transactions, none touching orders.
    for _ in 0..200 {
        sqlx::query(
            "INSERT INTO noise (body) SELECT repeat('x', 100) FROM generate_series(1, 100)",
        )
        .execute(&db)
        .await
        .unwrap();
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint - \
         (SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots \
          WHERE slot_name = current_database() || '_orders')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    eprintln!("WAL ahead of the slot right after the writes: {written} bytes");

    // Heartbeats let the reader confirm past the noise: the confirmed
    // position catches up, and with it the WAL the slot retains.
    let retained = eventually("the slot to release the WAL", CONVERGE, || async {
        let (lag, retained): (i64, i64) = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = current_database() || '_orders'",
        )
        .fetch_one(&db)
        .await
        .ok()?;
        (lag < 64 * 1024 && retained < 1024 * 1024).then_some(retained)
    })
    .await;
    eprintln!("retained WAL after the heartbeat: {retained} bytes");
    assert!(retained < 1024 * 1024);
}

async fn outbox_via_cdc(env: &TestEnv) -> Service {
    env.start_order_service("outbox", None, CDC_RELAY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_credits_two_hundred_orders_and_keeps_the_table_empty() {
    let env = TestEnv::new("outbox_cdc_200").await;
    let orders = outbox_via_cdc(&env).await;
    let _rewards = env.rewards_service().await;
    place_many(&env, orders.url(), 0, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_survives_a_crash_after_commit() {
    let env = TestEnv::new("outbox_cdc_crash_after_commit").await;
    let _rewards = env.rewards_service().await;
    let mut orders = env
        .start_order_service(
            "outbox",
            Some("after_commit_before_publish=return"),
            CDC_RELAY,
        )
        .await;
    place_into_crash(
        &env.http,
        &mut orders,
        &order("quinn", &[("SKU-1", 1, 900)]),
        None,
    )
    .await;
    // The row is gone from the table but not from the WAL.
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
    let _restarted = outbox_via_cdc(&env).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_survives_a_crash_before_confirm() {
    let env = TestEnv::new("outbox_cdc_crash_before_confirm").await;
    let _rewards = env.rewards_service().await;
    let mut orders = env
        .start_order_service("outbox", Some("cdc_before_confirm=return"), CDC_RELAY)
        .await;
    place_ok(
        &env.http,
        orders.url(),
        &order("ray", &[("SKU-1", 1, 1100)]),
    )
    .await;
    orders.assert_crashed().await;
    let _restarted = outbox_via_cdc(&env).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}
