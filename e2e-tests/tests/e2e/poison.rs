//! A message no consumer can ever apply is dead-lettered alone and never
//! holds up another; one that keeps failing is dead-lettered after the
//! configured deliveries; `order-events dlq` lists and redrives them.

use chrono::Utc;
use futures::future::join_all;
use harness::api::{
    assert_credited_exactly, assert_projected_exactly, count, metric_sum, order, place_ok,
    place_order,
};
use harness::env::Private;
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};
use serde_json::{Value, json};
use shared_events::{Envelope, Names, OrderPlaced, OrderPlacedLine};
use uuid::Uuid;

/// An `OrderPlaced` for one line of `total_minor`, as a producer would send it.
fn placed(customer: &str, currency: &str, total_minor: i64) -> Envelope<OrderPlaced> {
    let order_id = Uuid::now_v7();
    Envelope::new(
        shared_events::placed_event_id(order_id),
        Utc::now(),
        OrderPlaced {
            order_id,
            customer_id: customer.to_owned(),
            currency: currency.to_owned(),
            total_minor,
            lines: vec![OrderPlacedLine {
                sku: "SKU-1".into(),
                quantity: 1,
                unit_price_minor: total_minor,
            }],
            placed_at: Utc::now(),
        },
    )
}

/// Runs `order-events dlq ARGS` against the test's NATS; stdout.
async fn dlq(env: &TestEnv, args: &[&str]) -> String {
    dlq_with(env, args, &[]).await
}

/// Runs `order-events dlq ARGS` against the test's NATS with the
/// environment variables `vars`; stdout.
pub(crate) async fn dlq_with(env: &TestEnv, args: &[&str], vars: &[(&str, &str)]) -> String {
    let output = tokio::process::Command::new(
        harness::service::binary_path("order-events").expect("the CLI is built"),
    )
    .envs(vars.iter().copied())
    .arg("dlq")
    .args(args)
    .args([
        "--nats-url",
        env.nats_url(),
        "--events-prefix",
        env.events_prefix(),
    ])
    .output()
    .await
    .expect("running order-events dlq");
    assert!(
        output.status.success(),
        "order-events dlq {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_overflow_is_dead_lettered_alone_and_its_batch_is_credited() {
    let env = TestEnv::new("poison_overflow").await;
    let names = Names::new(env.events_prefix()).unwrap();
    // The order-service in front sets up the stream; the events below come
    // from a producer without its total limit.
    let _orders = env.order_service(Mode::Outbox).start().await;
    let js = env.jetstream().await;
    let huge = placed("whale", "JPY", i64::MAX - 10);
    let overflow = placed("whale", "JPY", 1000);
    let others: Vec<_> = (0..200)
        .map(|i| placed(&format!("minnow{}", i % 10), "EUR", 2500))
        .collect();
    // Published before rewards-service starts, and surrounded by healthy
    // events, so that the overflow arrives inside a batch; the split metric
    // checks that it did.
    let (before, after) = others.split_at(100);
    let sequence = std::iter::once(&huge)
        .chain(before)
        .chain([&overflow])
        .chain(after);
    for event in sequence {
        shared_events::jetstream::publish(
            &js,
            names.order_placed_subject(),
            event.event_id,
            None,
            event.to_bytes(),
        )
        .await
        .unwrap();
    }
    let rewards_service = env.rewards_service().start().await;

    let rewards = env.rewards_db().await;
    eventually("the healthy events credited", CONVERGE, || async {
        (count(&rewards, "reward_ledger").await == 201).then_some(())
    })
    .await;
    env.wait_until_consumed_by("rewards").await;
    let mut credited: Vec<Uuid> = sqlx::query_scalar("SELECT order_id FROM reward_ledger")
        .fetch_all(&rewards)
        .await
        .unwrap();
    credited.sort_unstable();
    let mut expected: Vec<Uuid> = [&huge]
        .into_iter()
        .chain(&others)
        .map(|e| e.payload.order_id)
        .collect();
    expected.sort_unstable();
    assert_eq!(credited, expected);
    let whale: i64 =
        sqlx::query_scalar("SELECT balance FROM reward_accounts WHERE customer_id = 'whale'")
            .fetch_one(&rewards)
            .await
            .unwrap();
    assert_eq!(whale, i64::MAX - 10);
    let wrong_balances: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reward_accounts a WHERE balance <>
         (SELECT sum(points) FROM reward_ledger l WHERE l.customer_id = a.customer_id)",
    )
    .fetch_one(&rewards)
    .await
    .unwrap();
    assert_eq!(wrong_balances, 0);
    // The overflow failed inside a batch, which was applied again message by
    // message: exactly one split.
    assert_eq!(
        metric_sum(
            &env.http,
            rewards_service.url(),
            "order_events_consumer_batches_split_total"
        )
        .await,
        1
    );

    assert_eq!(env.dead_letters().await, 1);
    let letters: Value = serde_json::from_str(&dlq(&env, &["list", "--json"]).await).unwrap();
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["event_id"], overflow.event_id.to_string());
    assert_eq!(letters[0]["consumer"], "rewards");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("out of range"),
        "{}",
        letters[0]["reason"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_failing_is_dead_lettered_after_max_deliver_and_redrive_credits_it() {
    let env = TestEnv::new("poison_max_deliver").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let mut rewards = env
        .rewards_service()
        .crash_at(CrashPoint::ConsumerApplyFails)
        .set("CONSUMER_MAX_DELIVER", "3")
        .start()
        .await;
    place_ok(
        &env.http,
        orders.url(),
        &order("dora", &[("SKU-1", 2, 1250)]),
    )
    .await;

    eventually("the failing event dead-lettered", CONVERGE, || async {
        (env.dead_letters().await == 1).then_some(())
    })
    .await;
    let letters: Value = serde_json::from_str(&dlq(&env, &["list", "--json"]).await).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("failed 3 deliveries"),
        "{}",
        letters[0]["reason"]
    );
    assert_eq!(count(&env.rewards_db().await, "reward_ledger").await, 0);

    // The cause is fixed (the service restarted without the fault), and the
    // operator sends the event back.
    rewards.kill().await;
    let _rewards = env.rewards_service().start().await;
    let id = letters[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(
        dlq(&env, &["redrive", "--id", &id]).await.trim(),
        "redriven: 1"
    );
    assert_credited_exactly(&env, 1).await;
    assert_eq!(dlq(&env, &["list", "--json"]).await.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_above_the_maximum_total_is_refused_with_422_and_writes_nothing() {
    let env = TestEnv::new("poison_total_limit").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let body = json!({
        "customer_id": "whale",
        "currency": "JPY",
        // Each line within its limits, the total (10^10) above the default
        // MAX_ORDER_TOTAL_MINOR (10^9).
        "lines": [{ "sku": "SKU-1", "quantity": 1000, "unit_price_minor": 10_000_000 }],
    });
    let refused = place_order(&env.http, orders.url(), &body, None)
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "total_too_large");
    assert_eq!(count(&env.orders_db().await, "orders").await, 0);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_while_the_database_is_down_never_dead_letter_an_event() {
    let env = TestEnv::with_private("poison_database_outage", Private::postgres()).await;
    // Self-read places orders without the order database, so events keep
    // arriving while PostgreSQL is down.
    let orders = env.order_service(Mode::SelfRead).start().await;
    let rewards = env
        .rewards_service()
        .set("CONSUMER_MAX_DELIVER", "2")
        .start()
        .await;

    env.stop_postgres();
    let placed = join_all((0..5).map(|i| {
        let (env, url) = (&env, orders.url());
        async move {
            let body = order(&format!("o{i}"), &[("SKU-1", 1, 1500)]);
            place_order(&env.http, url, &body, Some(&format!("outage-{i}")))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    }))
    .await;
    assert_eq!(placed, vec![202; 5]);
    // Every event fails more often than CONSUMER_MAX_DELIVER allows for a
    // failure that is the event's own.
    eventually("deliveries failed during the outage", CONVERGE, || async {
        (metric_sum(&env.http, rewards.url(), "order_events_consumed_total").await >= 15)
            .then_some(())
    })
    .await;
    env.start_postgres();

    // The credits are checked against the order history, which the
    // projector writes on its own schedule after the outage.
    assert_projected_exactly(&env, 5).await;
    assert_credited_exactly(&env, 5).await;
    assert_eq!(env.dead_letters().await, 0);
}
