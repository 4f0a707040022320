//! A cancelled order's credit is reversed once, whatever order the stream
//! holds the order's events in: a cancellation stored before its placement
//! waits (in the gauge) and nets out with the credit when it comes, one
//! stored after it reverses the credit; a cancellation replayed under
//! another event id changes nothing, and one that names another customer
//! than the credit is dead-lettered.

use chrono::Utc;
use harness::api::metric_sum;
use harness::{CONVERGE, TestEnv, eventually};
use serde_json::Value;
use shared_events::{Envelope, Names, OrderCancelled, OrderPlaced, OrderPlacedLine};
use uuid::Uuid;

const AWAITING: &str = "order_events_reversals_awaiting_credit";

/// An `OrderPlaced` for one line of `total_minor` EUR.
fn placed(customer: &str, total_minor: i64) -> Envelope<OrderPlaced> {
    let order_id = Uuid::now_v7();
    Envelope::new(
        shared_events::placed_event_id(order_id),
        Utc::now(),
        OrderPlaced {
            order_id,
            customer_id: customer.to_owned(),
            currency: "EUR".into(),
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

/// The cancellation of `order`, under the id order-service derives.
fn cancelled(order: &Envelope<OrderPlaced>) -> Envelope<OrderCancelled> {
    let order = &order.payload;
    Envelope::new(
        shared_events::cancelled_event_id(order.order_id),
        Utc::now(),
        OrderCancelled {
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            currency: order.currency.clone(),
            total_minor: order.total_minor,
            cancelled_at: Utc::now(),
            reason: Some("changed my mind".into()),
        },
    )
}

/// The same cancellation as another publisher would send it.
fn under_another_id(event: &Envelope<OrderCancelled>) -> Envelope<OrderCancelled> {
    Envelope {
        event_id: Uuid::now_v7(),
        ..event.clone()
    }
}

/// The entries of one order in the ledger: kind and points, credit first.
async fn entries(rewards: &sqlx::PgPool, order_id: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT kind, points FROM reward_ledger WHERE order_id = $1 ORDER BY kind")
        .bind(order_id)
        .fetch_all(rewards)
        .await
        .expect("reading the ledger")
}

fn owned(entries: &[(&str, i64)]) -> Vec<(String, i64)> {
    entries.iter().map(|(k, p)| ((*k).to_owned(), *p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reverses_its_credit_once_whichever_event_the_stream_holds_first() {
    let env = TestEnv::new("cancellations").await;
    let names = Names::new(env.events_prefix()).unwrap();
    let rewards_service = env.rewards_service().start().await;
    let url = rewards_service.url();
    let js = env.jetstream().await;
    let publish = |subject: String, event_id: Uuid, bytes: Vec<u8>| {
        let js = js.clone();
        async move {
            shared_events::jetstream::publish(&js, subject, event_id, None, bytes)
                .await
                .expect("publishing");
        }
    };
    let (early, late, kept) = (placed("ana", 2599), placed("bo", 1250), placed("ana", 1000));
    let (early_cancel, late_cancel) = (cancelled(&early), cancelled(&late));

    // The cancellation of `early` is stored before its placement: it waits,
    // and nothing is credited or reversed.
    let subject = names.order_cancelled_subject();
    publish(
        subject.clone(),
        early_cancel.event_id,
        early_cancel.to_bytes(),
    )
    .await;
    eventually("the cancellation awaiting its credit", CONVERGE, || async {
        (metric_sum(&env.http, url, AWAITING).await == 1).then_some(())
    })
    .await;
    env.wait_until_consumed_by("rewards").await;
    let rewards = env.rewards_db().await;
    assert!(entries(&rewards, early.payload.order_id).await.is_empty());
    let ana = env
        .http
        .get(format!("{url}/customers/ana/rewards"))
        .send()
        .await
        .unwrap();
    assert_eq!(ana.status(), 404, "no balance before the credit");

    // The placements, then the cancellation of `late` after its credit.
    for order in [&early, &late, &kept] {
        let subject = names.order_placed_subject();
        publish(subject, order.event_id, order.to_bytes()).await;
    }
    env.wait_until_consumed_by("rewards").await;
    publish(
        subject.clone(),
        late_cancel.event_id,
        late_cancel.to_bytes(),
    )
    .await;
    // Each cancellation again under another event id, and one of `kept`
    // that names another customer than its credit.
    let replays = [
        under_another_id(&early_cancel),
        under_another_id(&late_cancel),
    ];
    for replay in &replays {
        publish(subject.clone(), replay.event_id, replay.to_bytes()).await;
    }
    let mut foreign = cancelled(&kept);
    foreign.payload.customer_id = "eve".into();
    publish(subject.clone(), foreign.event_id, foreign.to_bytes()).await;
    env.wait_until_consumed_by("rewards").await;

    assert_eq!(
        entries(&rewards, early.payload.order_id).await,
        owned(&[("credit", 25), ("reversal", -25)])
    );
    assert_eq!(
        entries(&rewards, late.payload.order_id).await,
        owned(&[("credit", 12), ("reversal", -12)])
    );
    assert_eq!(
        entries(&rewards, kept.payload.order_id).await,
        owned(&[("credit", 10)])
    );
    let balances: Vec<(String, i64)> =
        sqlx::query_as("SELECT customer_id, balance FROM reward_accounts ORDER BY customer_id")
            .fetch_all(&rewards)
            .await
            .unwrap();
    assert_eq!(balances, [("ana".to_owned(), 10), ("bo".to_owned(), 0)]);
    assert_eq!(metric_sum(&env.http, url, AWAITING).await, 0);
    let duplicates = "order_events_consumed_total{consumer=\"rewards\",outcome=\"duplicate\"}";
    assert_eq!(metric_sum(&env.http, url, duplicates).await, 2);

    // The API shows each entry with its kind and signed points, and the
    // balance net of the reversal.
    let ana: Value = env
        .http
        .get(format!("{url}/customers/ana/rewards"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ana["balance"], 10);
    let mut ledger: Vec<(String, String, i64)> = ana["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["order_id"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["points"].as_i64().unwrap(),
            )
        })
        .collect();
    ledger.sort();
    let (early_id, kept_id) = (
        early.payload.order_id.to_string(),
        kept.payload.order_id.to_string(),
    );
    let mut expected = vec![
        (early_id.clone(), "credit".to_owned(), 25),
        (early_id, "reversal".to_owned(), -25),
        (kept_id, "credit".to_owned(), 10),
    ];
    expected.sort();
    assert_eq!(ledger, expected);

    // The cancellation naming another customer is dead-lettered, with why.
    assert_eq!(env.dead_letters().await, 1);
    let letters: Value =
        serde_json::from_str(&crate::poison::dlq_with(&env, &["list", "--json"], &[]).await)
            .unwrap();
    assert_eq!(letters[0]["event_id"], foreign.event_id.to_string());
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(r#"customer "eve", credited to "ana""#),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_made_for_placements_alone_is_widened_and_keeps_its_place() {
    use async_nats::jetstream::consumer::{Config, PullConsumer};

    let env = TestEnv::new("cancellations_widened").await;
    let names = Names::new(env.events_prefix()).unwrap();
    let js = env.jetstream().await;
    let first = placed("ana", 1000);
    let mut rewards_service = env.rewards_service().start().await;
    shared_events::jetstream::publish(
        &js,
        names.order_placed_subject(),
        first.event_id,
        None,
        first.to_bytes(),
    )
    .await
    .unwrap();
    env.wait_until_consumed_by("rewards").await;
    rewards_service.kill().await;

    // The durable consumer as a deployment before cancellations made it.
    let stream = js.get_stream(names.stream()).await.unwrap();
    let mut consumer: PullConsumer = stream.get_consumer("rewards").await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    assert_eq!(config.filter_subject, names.stream_subjects());
    let _: async_nats::jetstream::consumer::Consumer<Config> = stream
        .update_consumer(Config {
            filter_subject: names.order_placed_subject(),
            ..config
        })
        .await
        .unwrap();
    let second = placed("ana", 2500);
    shared_events::jetstream::publish(
        &js,
        names.order_placed_subject(),
        second.event_id,
        None,
        second.to_bytes(),
    )
    .await
    .unwrap();

    // Started again, rewards-service widens it: it goes on from where it
    // was (the second order), and takes cancellations.
    let rewards_service = env.rewards_service().start().await;
    let cancel = cancelled(&second);
    shared_events::jetstream::publish(
        &js,
        names.order_cancelled_subject(),
        cancel.event_id,
        None,
        cancel.to_bytes(),
    )
    .await
    .unwrap();
    env.wait_until_consumed_by("rewards").await;
    let mut consumer: PullConsumer = stream.get_consumer("rewards").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.filter_subject, names.stream_subjects());
    let rewards = env.rewards_db().await;
    assert_eq!(
        entries(&rewards, first.payload.order_id).await,
        owned(&[("credit", 10)])
    );
    assert_eq!(
        entries(&rewards, second.payload.order_id).await,
        owned(&[("credit", 25), ("reversal", -25)])
    );
    let duplicates = "order_events_consumed_total{consumer=\"rewards\",outcome=\"duplicate\"}";
    assert_eq!(
        metric_sum(&env.http, rewards_service.url(), duplicates).await,
        0,
        "nothing delivered again"
    );
}
