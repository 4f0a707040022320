//! Change data capture: the `orders` table is the source of events, and the
//! outbox can be relayed the same way.

use futures::future::join_all;
use harness::api::{
    assert_credited_exactly, count, order, place_into_crash, place_ok, place_order,
    place_racing_a_crash, published_by,
};
use harness::env::Private;
use harness::service::binary_path;
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use sqlx::PgPool;

pub(super) async fn place_many(env: &TestEnv, url: &str, from: usize, to: usize) {
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

pub(super) async fn wait_for_active_reader(env: &TestEnv, suffix: &str) {
    let db = env.orders_db().await;
    eventually("a reader to hold the slot", CONVERGE, || async {
        slot_active(&db, suffix).await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_credits_two_hundred_concurrent_orders_once() {
    let env = TestEnv::new("cdc_200").await;
    let orders = env.order_service(Mode::Cdc).start().await;
    let _rewards = env.rewards_service().start().await;
    place_many(&env, orders.url(), 0, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdc_crash_between_puback_and_confirm_is_replayed_and_absorbed() {
    let env = TestEnv::new("cdc_crash_before_confirm").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::Cdc)
        .crash_at(CrashPoint::CdcBeforeConfirm)
        .start()
        .await;

    // Committed (and answered 201, unless the crash beats the answer); the
    // reader publishes it, gets the PubAck and dies before confirming the slot.
    place_racing_a_crash(&env.http, &mut orders, &order("nia", &[("SKU-1", 1, 1500)])).await;

    // The restarted reader streams the transaction again: the same event id,
    // dropped by the broker as a duplicate.
    let _restarted = env.order_service(Mode::Cdc).start().await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_committed_before_a_crash_is_captured_after_restart() {
    let env = TestEnv::new("cdc_crash_after_commit").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::Cdc)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
        .await;
    place_into_crash(
        &env.http,
        &mut orders,
        &order("oli", &[("SKU-1", 1, 800)]),
        None,
    )
    .await;
    let _restarted = env.order_service(Mode::Cdc).start().await;
    assert_credited_exactly(&env, 1).await;
}

/// Waits until the slot `<db>_orders` confirmed everything committed so far.
async fn wait_until_confirmed(env: &TestEnv) {
    let db = env.orders_db().await;
    let written: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&db)
        .await
        .unwrap();
    eventually("the slot to confirm every commit", CONVERGE, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots \
             WHERE slot_name = current_database() || '_orders'",
        )
        .bind(&written)
        .fetch_one(&db)
        .await
        .ok()?
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_takes_over_when_the_active_reader_dies() {
    let env = TestEnv::new("cdc_takeover").await;
    let _rewards = env.rewards_service().start().await;
    let mut first = env.order_service(Mode::Cdc).start().await;
    wait_for_active_reader(&env, "orders").await;
    // The second instance finds the slot held (55006) and stands by; it
    // serves HTTP all the same.
    let second = env.order_service(Mode::Cdc).start().await;

    place_many(&env, second.url(), 0, 100).await;
    // Killed once its slot confirmed all 100, so the standby replays nothing
    // and every publish is counted by a live or already-read counter.
    wait_until_confirmed(&env).await;
    let by_first = published_by(&env.http, first.url()).await;
    first.kill().await;
    // Orders keep arriving while the standby takes the slot over.
    place_many(&env, second.url(), 100, 150).await;
    let first_again = env.order_service(Mode::Cdc).start().await;
    place_many(&env, second.url(), 150, 200).await;

    assert_credited_exactly(&env, 200).await;
    // Counted by the publishers, not the stream: its duplicate window would
    // hide a double publish.
    assert_eq!(by_first, 100);
    let total = || async {
        by_first
            + published_by(&env.http, second.url()).await
            + published_by(&env.http, first_again.url()).await
    };
    eventually("every publish to be counted", CONVERGE, || async {
        (total().await >= 200).then_some(())
    })
    .await;
    assert_eq!(total().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_reconnects_after_postgres_restarts_mid_stream() {
    let env = TestEnv::with_private("cdc_postgres_restart", Private::postgres()).await;
    let orders = env.order_service(Mode::Cdc).start().await;
    let _rewards = env.rewards_service().start().await;
    place_many(&env, orders.url(), 0, 50).await;

    env.restart_postgres();
    // The services' pools reconnect on their own: each order is retried
    // until it is taken, and the only failures meanwhile are transient: 503
    // while no connection can be had, 500 for a connection lost mid-way.
    for _ in 50..100 {
        eventually("order-service to take orders again", CONVERGE, || async {
            let body = order("pat", &[("SKU-1", 1, 100)]);
            let response = place_order(&env.http, orders.url(), &body, None)
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                [201, 500, 503].contains(&status),
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
    let env = TestEnv::with_private("cdc_idle_slot", Private::postgres()).await;
    let _orders = env.order_service(Mode::Cdc).start().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_credits_two_hundred_orders_and_keeps_the_table_empty() {
    let env = TestEnv::new("outbox_cdc_200").await;
    let orders = env.order_service(Mode::OutboxCdc).start().await;
    let _rewards = env.rewards_service().start().await;
    place_many(&env, orders.url(), 0, 200).await;
    assert_credited_exactly(&env, 200).await;
    assert_eq!(env.stream_messages().await, 200);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_survives_a_crash_after_commit() {
    let env = TestEnv::new("outbox_cdc_crash_after_commit").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::OutboxCdc)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
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
    let _restarted = env.order_service(Mode::OutboxCdc).start().await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdc_outbox_relay_survives_a_crash_before_confirm() {
    let env = TestEnv::new("outbox_cdc_crash_before_confirm").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::OutboxCdc)
        .crash_at(CrashPoint::CdcBeforeConfirm)
        .start()
        .await;
    place_racing_a_crash(&env.http, &mut orders, &order("ray", &[("SKU-1", 1, 1100)])).await;
    let _restarted = env.order_service(Mode::OutboxCdc).start().await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}

/// Runs `order-events cdc resync --json` against the test's order database
/// and NATS; what it reports.
pub(super) async fn resync(env: &TestEnv) -> serde_json::Value {
    let output = tokio::process::Command::new(binary_path("order-events").unwrap())
        .args(["cdc", "resync", "--json"])
        .args([
            "--database-url",
            env.orders_url(),
            "--nats-url",
            env.nats_url(),
        ])
        .args(["--events-prefix", env.events_prefix()])
        .output()
        .await
        .expect("running order-events");
    assert!(
        output.status.success(),
        "resync failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("resync prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_slot_stops_start_up_until_resync_republishes_the_unconfirmed_orders() {
    let env = TestEnv::with_private_nats("cdc_vanished_slot").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 0, 3).await;
    assert_credited_exactly(&env, 3).await;

    // Two orders committed while NATS is down: only the slot holds them.
    env.stop_nats();
    place_many(&env, orders.url(), 3, 5).await;
    orders.kill().await;
    env.start_nats();
    // The slot vanishes (a failover to a standby, a restore, a manual drop).
    let db = env.orders_db().await;
    eventually("the slot to be dropped", CONVERGE, || async {
        sqlx::query("SELECT pg_drop_replication_slot(current_database() || '_orders')")
            .execute(&db)
            .await
            .ok()
    })
    .await;

    // A new slot would start after the two orders and skip them for good.
    // (No backtrace, so that the error is among the log lines reported.)
    let refused = env
        .order_service(Mode::Cdc)
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .expect("order-service refuses to start without its slot");
    let refused = format!("{refused:#}");
    assert!(refused.contains("order-events cdc resync"), "{refused}");
    assert!(refused.contains("is gone"), "{refused}");

    let slot = format!("{}_orders_orders", env.events_prefix());
    let outcome = resync(&env).await;
    assert_eq!(outcome["orders_checked"], 5);
    assert_eq!(outcome["already_in_stream"], 3);
    assert_eq!(outcome["republished"], 2);
    assert_eq!(outcome["forgotten_slots"], serde_json::json!([slot]));
    // Idempotent: a second run finds everything in the stream.
    let again = resync(&env).await;
    assert_eq!(again["republished"], 0);

    let restarted = env.order_service(Mode::Cdc).start().await;
    place_many(&env, restarted.url(), 5, 6).await;
    assert_credited_exactly(&env, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_missing_order_lines_is_repaired_at_start_up() {
    let env = TestEnv::new("cdc_publication_repair").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    wait_for_active_reader(&env, "orders").await;
    assert!(
        orders
            .terminate(std::time::Duration::from_secs(15))
            .await
            .success()
    );
    let db = env.orders_db().await;
    sqlx::query("ALTER PUBLICATION order_events_orders SET TABLE orders")
        .execute(&db)
        .await
        .unwrap();

    let orders = env.order_service(Mode::Cdc).start().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_publication_tables \
         WHERE pubname = 'order_events_orders' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(tables, ["order_lines", "orders"]);
    place_ok(&env.http, orders.url(), &order("yan", &[("SKU-1", 2, 650)])).await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.dead_letters().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lines_written_without_their_order_are_dead_lettered_and_counted() {
    let env = TestEnv::new("cdc_orphan_lines").await;
    let _rewards = env.rewards_service().start().await;
    let orders = env.order_service(Mode::Cdc).start().await;
    let id = place_ok(&env.http, orders.url(), &order("zoe", &[("SKU-1", 1, 400)])).await;
    assert_credited_exactly(&env, 1).await;

    // Two lines added later, in a transaction of their own: no event can
    // carry them, and they must not vanish either.
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor) \
         VALUES ($1, 2, 'SKU-2', 1, 100), ($1, 3, 'SKU-3', 1, 100)",
    )
    .bind(id)
    .execute(&env.orders_db().await)
    .await
    .unwrap();
    eventually("the dead letter", CONVERGE, || async {
        (env.dead_letters().await >= 1).then_some(())
    })
    .await;
    assert_eq!(env.dead_letters().await, 1);
    let metrics = env
        .http
        .get(format!("{}/metrics", orders.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("order_events_cdc_dead_lettered_rows_total"))
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(counted[0].contains("table=\"order_lines\""), "{counted:?}");
    assert!(counted[0].ends_with(" 2"), "{counted:?}");
    assert_eq!(published_by(&env.http, orders.url()).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_remembered_from_another_server_stops_start_up_until_resync_forgets_it() {
    let env = TestEnv::new("cdc_other_server").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env.order_service(Mode::Cdc).start().await;
    place_many(&env, orders.url(), 0, 2).await;
    assert_credited_exactly(&env, 2).await;
    assert!(
        orders
            .terminate(std::time::Duration::from_secs(15))
            .await
            .success()
    );
    // As after a restore into another cluster: the memory came along, and
    // the slot's positions belong to another server's WAL.
    let db = env.orders_db().await;
    sqlx::query("UPDATE cdc_slots SET system_identifier = system_identifier + 1")
        .execute(&db)
        .await
        .unwrap();

    let refused = env
        .order_service(Mode::Cdc)
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .expect("order-service refuses to start with a slot from another server");
    let refused = format!("{refused:#}");
    assert!(refused.contains("another PostgreSQL server"), "{refused}");
    assert!(refused.contains("order-events cdc resync"), "{refused}");

    let outcome = resync(&env).await;
    assert_eq!(outcome["republished"], 0);
    assert_eq!(outcome["already_in_stream"], 2);
    let restarted = env.order_service(Mode::Cdc).start().await;
    place_many(&env, restarted.url(), 2, 3).await;
    assert_credited_exactly(&env, 3).await;
    assert_eq!(count(&db, "cdc_slots").await, 1);
}
