//! Self-read's order history applies an order's cancellation whichever of
//! its two events the stream holds first: one that comes before its order
//! waits (counted on `/metrics`) and the order appears already cancelled;
//! one that comes after cancels the order.

use chrono::{DateTime, SubsecRound as _, Utc};
use harness::api::{get_json, metric_sum};
use harness::{CONVERGE, Mode, TestEnv, eventually};
use serde_json::Value;
use shared_events::{
    Envelope, Names, OrderCancelled, OrderPlaced, OrderPlacedLine, cancelled_event_id,
    placed_event_id,
};
use uuid::Uuid;

const AWAITING: &str = "order_events_cancellations_awaiting_order";

fn placed(order_id: Uuid, customer: &str) -> Vec<u8> {
    let placed_at = Utc::now().trunc_subsecs(6);
    Envelope::new(
        placed_event_id(order_id),
        placed_at,
        OrderPlaced {
            order_id,
            customer_id: customer.to_owned(),
            currency: "EUR".into(),
            total_minor: 1200,
            lines: vec![OrderPlacedLine {
                sku: "SKU-1".into(),
                quantity: 3,
                unit_price_minor: 400,
            }],
            placed_at,
        },
    )
    .to_bytes()
}

fn cancelled(order_id: Uuid, customer: &str, at: DateTime<Utc>) -> Vec<u8> {
    Envelope::new(
        cancelled_event_id(order_id),
        at,
        OrderCancelled {
            order_id,
            customer_id: customer.to_owned(),
            currency: "EUR".into(),
            total_minor: 1200,
            cancelled_at: at,
            reason: Some("ordered twice".into()),
        },
    )
    .to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_stored_before_its_order_waits_and_the_order_reads_cancelled() {
    let env = TestEnv::new("history_cancel_first").await;
    let orders = env.order_service(Mode::SelfRead).start().await;
    let names = Names::new(env.events_prefix()).unwrap();
    let js = env.jetstream().await;
    // A test publisher: on the subject the consumers of the stream read.
    let publish = |event_id: Uuid, bytes: Vec<u8>| {
        let (js, subject) = (js.clone(), names.order_placed_subject());
        async move {
            shared_events::jetstream::publish(&js, subject, event_id, None, bytes)
                .await
                .expect("the broker stores the event");
        }
    };
    let awaiting = || metric_sum(&env.http, orders.url(), AWAITING);
    let (early, in_order) = (Uuid::now_v7(), Uuid::now_v7());
    let (early_at, in_order_at) = (
        Utc::now().trunc_subsecs(6),
        (Utc::now() + chrono::Duration::seconds(1)).trunc_subsecs(6),
    );

    // The cancellation first: the history does not have the order, so the
    // cancellation waits for it, and the order is not there to read.
    publish(cancelled_event_id(early), cancelled(early, "ada", early_at)).await;
    eventually(
        "the cancellation to wait for its order",
        CONVERGE,
        || async { (awaiting().await == 1).then_some(()) },
    )
    .await;
    let missing = env
        .http
        .get(format!("{}/orders/{early}", orders.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Another order's two events in their order; then the early one's order.
    publish(placed_event_id(in_order), placed(in_order, "ada")).await;
    publish(
        cancelled_event_id(in_order),
        cancelled(in_order, "ada", in_order_at),
    )
    .await;
    publish(placed_event_id(early), placed(early, "ada")).await;

    for (id, at) in [(early, early_at), (in_order, in_order_at)] {
        let url = format!("{}/orders/{id}", orders.url());
        let order: Value = eventually(&format!("order {id} to read cancelled"), CONVERGE, || {
            let url = url.clone();
            let env = &env;
            async move {
                let order = get_json(&env.http, &url).await;
                (order["status"] == "cancelled").then_some(order)
            }
        })
        .await;
        assert_eq!(
            order["cancelled_at"],
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        assert_eq!(order["total_minor"], 1200);
        assert_eq!(order["lines"].as_array().map(Vec::len), Some(1));
    }
    eventually("nothing to wait for its order", CONVERGE, || async {
        (awaiting().await == 0).then_some(())
    })
    .await;
    let listed = get_json(
        &env.http,
        &format!("{}/orders?customer_id=ada", orders.url()),
    )
    .await;
    let statuses: Vec<&Value> = listed["orders"]
        .as_array()
        .expect("a page of orders")
        .iter()
        .map(|order| &order["status"])
        .collect();
    assert_eq!(statuses, ["cancelled", "cancelled"]);
    env.wait_until_consumed_by(names.projector_consumer()).await;
    assert_eq!(env.dead_letters().await, 0);
}
