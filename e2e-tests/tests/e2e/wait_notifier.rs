//! `GET /orders/{id}?wait=` does not poll: the projector's notifications
//! wake exactly the waiters of the projected orders.

use std::time::Duration;

use harness::api::{order, place_order};
use harness::env::Private;
use harness::{Mode, TestEnv, eventually};
use tokio::time::Instant;
use uuid::Uuid;

use crate::http_limits::{counter, metrics_text, refusal};

/// The id self-read gives the order customer `ivy` places under `key`, so
/// that a test can wait for an order before it is placed.
fn id_of(key: &str) -> Uuid {
    Uuid::new_v5(
        &shared_events::ID_NAMESPACE,
        format!("order:ivy:{key}").as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_by_the_projection_not_by_polling() {
    const PRESENT: usize = 40;
    const ABSENT: usize = 20;
    let env = TestEnv::new("woken_waiters").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let base = orders.url().to_owned();
    let lookups = |metrics: String| counter(&metrics, "order_events_order_lookups_total");
    let before = lookups(metrics_text(&env, &base).await);

    // Self-read derives an order's id from its Idempotency-Key, so the
    // waiters can wait for orders that are not placed yet.
    let key = |i: usize| format!("woken-{i}");
    let mut waiters = Vec::new();
    for i in 0..PRESENT + ABSENT {
        let (id, wait) = if i < PRESENT {
            (id_of(&key(i)), "10s")
        } else {
            (Uuid::now_v7(), "2s")
        };
        let request = env.http.get(format!("{base}/orders/{id}?wait={wait}"));
        waiters.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), Instant::now())
        }));
    }
    let waiting = (PRESENT + ABSENT) as u64;
    eventually(
        "every waiter to have looked once",
        Duration::from_secs(10),
        || async { (lookups(metrics_text(&env, &base).await) == before + waiting).then_some(()) },
    )
    .await;

    let mut placed_at = Vec::new();
    for i in 0..PRESENT {
        let sent = Instant::now();
        let response = place_order(
            &env.http,
            &base,
            &order("ivy", &[("SKU-1", 1, 100)]),
            Some(&key(i)),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 202);
        placed_at.push(sent);
    }
    for (i, waiter) in waiters.into_iter().enumerate() {
        let (status, answered) = waiter.await.unwrap();
        if i < PRESENT {
            assert_eq!(status, 200, "waiter {i}");
            let after = answered - placed_at[i];
            assert!(
                after < Duration::from_secs(1),
                "waiter {i} answered {after:?} after placing"
            );
        } else {
            assert_eq!(status, 404, "waiter {i}");
        }
    }
    // One look each at the start, then one when the order was announced
    // (or at the deadline): no polling.
    assert_eq!(
        lookups(metrics_text(&env, &base).await),
        before + 2 * waiting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_still_woken_after_postgres_restarts() {
    let env = TestEnv::with_private("woken_after_restart", Private::postgres()).await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let base = orders.url().to_owned();
    env.restart_postgres();

    let body = order("ivy", &[("SKU-1", 1, 100)]);
    // The projector is back once an order placed now is projected.
    eventually(
        "an order to be projected again",
        Duration::from_secs(20),
        || async {
            let placed = place_order(&env.http, &base, &body, Some("after-restart-0"))
                .await
                .ok()?;
            if placed.status() != 202 {
                return None;
            }
            let url = format!("{base}/orders/{}?wait=1s", id_of("after-restart-0"));
            (env.http.get(url).send().await.ok()?.status() == 200).then_some(())
        },
    )
    .await;

    let waiter = {
        let request = env.http.get(format!(
            "{base}/orders/{}?wait=5s",
            id_of("after-restart-1")
        ));
        tokio::spawn(async move {
            (
                request.send().await.unwrap().status().as_u16(),
                Instant::now(),
            )
        })
    };
    let sent = Instant::now();
    let placed = place_order(&env.http, &base, &body, Some("after-restart-1"))
        .await
        .unwrap();
    assert_eq!(placed.status(), 202);
    let (status, answered) = waiter.await.unwrap();
    assert_eq!(status, 200);
    let after = answered - sent;
    assert!(
        after < Duration::from_secs(1),
        "answered {after:?} after placing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_service_answers_its_waiters_at_once() {
    let env = TestEnv::new("stopping_waiters").await;
    let mut orders = env.order_service(Mode::SelfRead).start().await;
    let base = orders.url().to_owned();
    let waiter = {
        let request = env
            .http
            .get(format!("{base}/orders/{}?wait=9s", Uuid::now_v7()));
        tokio::spawn(async move { refusal(request.send().await.unwrap()).await })
    };
    eventually(
        "the waiter to have looked once",
        Duration::from_secs(10),
        || async {
            let metrics = metrics_text(&env, &base).await;
            (counter(&metrics, "order_events_order_lookups_total") == 1).then_some(())
        },
    )
    .await;

    let status = orders.terminate(Duration::from_secs(3)).await;
    assert!(status.success(), "{status}");
    assert_eq!(
        waiter.await.unwrap(),
        (503, Some("1".to_owned()), "shutting_down".to_owned())
    );
}

/// Only self-read answers before its order is stored, so only self-read
/// keeps a `LISTEN` connection for `?wait` readers: in the other modes the
/// request that placed an order stored it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_self_read_listens_for_projected_orders() {
    let modes = [
        (Mode::Outbox, 0),
        (Mode::OutboxCdc, 0),
        (Mode::Cdc, 0),
        (Mode::DualWrite, 0),
        (Mode::SelfRead, 1),
    ];
    for (mode, expected) in modes {
        let env = TestEnv::new(&format!("listens_{}", mode.name().replace('-', "_"))).await;
        let _orders = env.order_service(mode).start().await;
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN %'",
        )
        .fetch_one(&env.orders_db().await)
        .await
        .unwrap();
        assert_eq!(listening, expected, "{}", mode.name());
    }
}
