//! The transactional outbox: every committed order is credited exactly once,
//! whatever dies and when.

use std::time::Duration;

use futures::future::join_all;
use harness::api::{
    assert_credited_exactly, count, get_json, order, place_into_crash, place_ok, place_order,
    published_by,
};
use harness::{CONVERGE, CrashPoint, Mode, TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_are_each_credited_once() {
    let env = TestEnv::new("outbox_200").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let _rewards = env.rewards_service().start().await;

    let placed = join_all((0..200).map(|i| {
        let body = order(
            &format!("c{}", i % 10),
            &[("SKU-1", 1 + i % 3, 1999), ("SKU-2", 1, 501)],
        );
        let (http, url) = (env.http.clone(), orders.url().to_owned());
        async move { place_ok(&http, &url, &body).await }
    }))
    .await;
    assert_eq!(placed.len(), 200);

    assert_credited_exactly(&env, 200).await;
    let rewards = env.rewards_db().await;
    let balance: i64 = sqlx::query_scalar("SELECT sum(balance)::bigint FROM reward_accounts")
        .fetch_one(&rewards)
        .await
        .unwrap();
    // Orders i with i % 3 == 0, 1, 2 total 25.00, 44.99, 64.98 EUR: 25, 44, 64 points.
    let expected: i64 = (0..200).map(|i| [25, 44, 64][i % 3]).sum();
    assert_eq!(balance, expected);
    assert_eq!(env.stream_messages().await, 200);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_returns_the_same_order_and_credits_once() {
    let env = TestEnv::new("outbox_idempotent").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let _rewards = env.rewards_service().start().await;
    let body = order("alice", &[("SKU-1", 2, 1250)]);

    let first = place_order(&env.http, orders.url(), &body, Some("key-1"))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: serde_json::Value = first.json().await.unwrap();

    let retry = place_order(&env.http, orders.url(), &body, Some("key-1"))
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["location"].to_str().unwrap(), location);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<serde_json::Value>().await.unwrap(), first);

    let other = order("alice", &[("SKU-1", 3, 1250)]);
    let misuse = place_order(&env.http, orders.url(), &other, Some("key-1"))
        .await
        .unwrap();
    assert_eq!(misuse.status(), 422);
    let error: serde_json::Value = misuse.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");

    assert_credited_exactly(&env, 1).await;
    let fetched: serde_json::Value =
        get_json(&env.http, &format!("{}{location}", orders.url())).await;
    assert_eq!(fetched, first);
    let rewards: serde_json::Value = get_json(
        &env.http,
        &format!("{}/customers/alice/rewards", _rewards.url()),
    )
    .await;
    assert_eq!(rewards["balance"], 25);
    assert_eq!(rewards["ledger"].as_array().unwrap().len(), 1);
    assert_eq!(count(&env.orders_db().await, "orders").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_committed_before_a_crash_is_credited_once_after_restart() {
    let env = TestEnv::new("outbox_crash_after_commit").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::Outbox)
        .crash_at(CrashPoint::AfterCommitBeforePublish)
        .start()
        .await;

    place_into_crash(
        &env.http,
        &mut orders,
        &order("bob", &[("SKU-1", 1, 4200)]),
        None,
    )
    .await;
    assert_eq!(count(&env.orders_db().await, "orders").await, 1);
    assert_eq!(count(&env.orders_db().await, "outbox").await, 1);

    let _restarted = env.order_service(Mode::Outbox).start().await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_crash_between_publish_and_delete_is_absorbed() {
    let env = TestEnv::new("outbox_crash_after_publish").await;
    let _rewards = env.rewards_service().start().await;
    let mut orders = env
        .order_service(Mode::Outbox)
        .crash_at(CrashPoint::AfterPublishBeforeMark)
        .start()
        .await;

    // The order is committed and answered; the relay then publishes and dies
    // before deleting the outbox row.
    place_ok(
        &env.http,
        orders.url(),
        &order("carol", &[("SKU-1", 1, 1000)]),
    )
    .await;
    orders.assert_crashed().await;
    assert_eq!(count(&env.orders_db().await, "outbox").await, 1);

    // The restarted relay publishes the row again under the same event id:
    // the broker drops it as a duplicate and the ledger would too.
    let _restarted = env.order_service(Mode::Outbox).start().await;
    let orders_db = env.orders_db().await;
    eventually("the outbox to drain", CONVERGE, || async {
        (count(&orders_db, "outbox").await == 0).then_some(())
    })
    .await;
    assert_credited_exactly(&env, 1).await;
    assert_eq!(env.stream_messages().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_crash_between_commit_and_ack_is_absorbed() {
    let env = TestEnv::new("outbox_consumer_crash").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let mut rewards = env
        .rewards_service()
        .crash_at(CrashPoint::ConsumerAfterCommitBeforeAck)
        .start()
        .await;

    place_ok(
        &env.http,
        orders.url(),
        &order("dave", &[("SKU-1", 3, 700)]),
    )
    .await;
    rewards.assert_crashed().await;
    let rewards_db = env.rewards_db().await;
    assert_eq!(count(&rewards_db, "reward_ledger").await, 1);

    // The unacked message is redelivered to the restarted consumer, which
    // finds the credit already there.
    let _restarted = env.rewards_service().start().await;
    place_ok(
        &env.http,
        orders.url(),
        &order("dave", &[("SKU-2", 1, 100)]),
    )
    .await;
    assert_credited_exactly(&env, 2).await;
    let balance: i64 =
        sqlx::query_scalar("SELECT balance FROM reward_accounts WHERE customer_id = 'dave'")
            .fetch_one(&rewards_db)
            .await
            .unwrap();
    assert_eq!(balance, 21 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewards_service_killed_mid_stream_loses_and_doubles_nothing() {
    let env = TestEnv::new("outbox_rewards_restart").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let mut rewards = env.rewards_service().start().await;
    let rewards_db = env.rewards_db().await;

    let place = |from: usize, to: usize| {
        join_all((from..to).map(|i| {
            let body = order(&format!("c{}", i % 7), &[("SKU-1", 1, 300)]);
            let (http, url) = (env.http.clone(), orders.url().to_owned());
            async move { place_ok(&http, &url, &body).await }
        }))
    };
    place(0, 100).await;
    eventually("some credits before the kill", CONVERGE, || async {
        (count(&rewards_db, "reward_ledger").await > 0).then_some(())
    })
    .await;
    rewards.kill().await;
    place(100, 150).await;
    let _restarted = env.rewards_service().start().await;
    place(150, 200).await;

    assert_credited_exactly(&env, 200).await;
    let balance: i64 = sqlx::query_scalar("SELECT sum(balance)::bigint FROM reward_accounts")
        .fetch_one(&rewards_db)
        .await
        .unwrap();
    assert_eq!(balance, 200 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_consumer_keeps_going() {
    let env = TestEnv::new("outbox_poison").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;

    let names = shared_events::Names::new(env.events_prefix()).unwrap();
    let js = env.jetstream().await;
    let poison = uuid::Uuid::now_v7();
    shared_events::jetstream::publish(
        &js,
        names.order_placed_subject(),
        poison,
        None,
        b"{not json".to_vec(),
    )
    .await
    .expect("publishing the poison message");
    place_ok(
        &env.http,
        orders.url(),
        &order("erin", &[("SKU-1", 1, 900)]),
    )
    .await;

    assert_credited_exactly(&env, 1).await;
    eventually("the dead letter", CONVERGE, || async {
        (env.dead_letters().await == 1).then_some(())
    })
    .await;
    let dlq = js.get_stream(names.dead_letter_stream()).await.unwrap();
    let letter = dlq
        .get_last_raw_message_by_subject(&names.dead_letter_subject("rewards"))
        .await
        .unwrap();
    assert_eq!(&letter.payload[..], b"{not json");
    let reason = letter
        .headers
        .get(shared_events::jetstream::dead_letter_headers::REASON)
        .unwrap()
        .to_string();
    assert!(reason.starts_with("not a JSON event envelope"), "{reason}");
    assert_eq!(env.dead_letters().await, 1);
    drop(rewards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_order_services_on_one_database_publish_each_order_once() {
    let env = TestEnv::new("outbox_two_relays").await;
    let first = env.order_service(Mode::Outbox).start().await;
    let second = env.order_service(Mode::Outbox).start().await;
    let _rewards = env.rewards_service().start().await;

    join_all((0..200).map(|i| {
        let url = if i % 2 == 0 {
            first.url()
        } else {
            second.url()
        }
        .to_owned();
        let body = order(&format!("c{}", i % 5), &[("SKU-1", 1, 100)]);
        let http = env.http.clone();
        async move { place_ok(&http, &url, &body).await }
    }))
    .await;

    assert_credited_exactly(&env, 200).await;
    // Neither relay published a row the other had claimed: counted by the
    // relays themselves, since the stream's duplicate window would hide it.
    let total = || async {
        published_by(&env.http, first.url()).await + published_by(&env.http, second.url()).await
    };
    eventually("every publish to be counted", CONVERGE, || async {
        (total().await >= 200).then_some(())
    })
    .await;
    assert_eq!(total().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_order_service_gracefully() {
    let env = TestEnv::new("outbox_sigterm").await;
    let mut orders = env.order_service(Mode::Outbox).start().await;
    let _rewards = env.rewards_service().start().await;
    place_ok(&env.http, orders.url(), &order("fay", &[("SKU-1", 1, 100)])).await;
    assert!(orders.terminate(Duration::from_secs(15)).await.success());
    let _restarted = env.order_service(Mode::Outbox).start().await;
    assert_credited_exactly(&env, 1).await;
}
