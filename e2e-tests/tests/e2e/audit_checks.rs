//! The audit's checks can fail: each double a faulty service could leave is
//! injected into the databases or the stream, named by the audit, then
//! removed, and the audit is consistent again.

use harness::api::{assert_credited_exactly, order, place_ok};
use harness::service::Service;
use harness::{Mode, TestEnv};
use serde_json::Value;
use shared_events::{Envelope, Names, OrderPlaced};
use sqlx::PgPool;
use uuid::Uuid;

const ORDERS: usize = 4;

struct Running {
    env: TestEnv,
    orders: Service,
    rewards: Service,
    ids: Vec<Uuid>,
}

/// `ORDERS` orders of one customer, placed and credited.
async fn credited_orders(name: &str) -> Running {
    let env = TestEnv::new(name).await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let rewards = env.rewards_service().start().await;
    let mut ids = Vec::new();
    for i in 0..ORDERS {
        let body = order("una", &[("SKU-1", 1, 1000 + i as i64 * 100)]);
        ids.push(place_ok(&env.http, orders.url(), &body).await);
    }
    assert_credited_exactly(&env, ORDERS as i64).await;
    Running {
        env,
        orders,
        rewards,
        ids,
    }
}

impl Running {
    async fn audit(&self, extra: &[&str]) -> (i32, Value) {
        harness::api::audit(&self.env, self.orders.url(), self.rewards.url(), extra)
            .await
            .expect("running order-events audit")
    }
}

fn ids(findings: &Value, kind: &str, field: &str) -> Vec<String> {
    findings[kind]
        .as_array()
        .unwrap_or_else(|| panic!("{kind} in {findings}"))
        .iter()
        .map(|item| {
            let id = if field.is_empty() { item } else { &item[field] };
            id.as_str().expect("an id").to_owned()
        })
        .collect()
}

/// Every kind of finding of the audit but `except`, each empty.
fn only(findings: &Value, except: &[&str]) {
    for kind in [
        "orders_without_credit",
        "credits_with_wrong_points",
        "credits_without_order",
        "balances_not_matching_orders",
        "orders_published_more_than_once",
        "acknowledged_orders_not_held",
        "orders_not_acknowledged",
    ] {
        if !except.contains(&kind) {
            assert_eq!(findings[kind], Value::Array(vec![]), "{kind}: {findings}");
        }
    }
}

/// A credit for `order_id` as the consumer writes one: the ledger row and
/// the points added to the balance.
async fn credit(rewards: &PgPool, like: Uuid, order_id: Uuid) {
    sqlx::query(
        "WITH copied AS (
             INSERT INTO reward_ledger (event_id, order_id, customer_id, points, order_total_minor,
                                        currency, order_placed_at, stream_sequence)
             SELECT $3, $2, customer_id, points, order_total_minor, currency, order_placed_at,
                    stream_sequence
             FROM reward_ledger WHERE order_id = $1
             RETURNING customer_id, points)
         UPDATE reward_accounts a SET balance = a.balance + copied.points FROM copied
         WHERE a.customer_id = copied.customer_id",
    )
    .bind(like)
    .bind(order_id)
    .bind(Uuid::now_v7())
    .execute(rewards)
    .await
    .expect("injecting a credit");
}

async fn uncredit(rewards: &PgPool, order_id: Uuid) {
    sqlx::query(
        "WITH gone AS (DELETE FROM reward_ledger WHERE order_id = $1
                       RETURNING customer_id, points)
         UPDATE reward_accounts a SET balance = a.balance - gone.points FROM gone
         WHERE a.customer_id = gone.customer_id",
    )
    .bind(order_id)
    .execute(rewards)
    .await
    .expect("removing a credit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_a_second_order_for_one_request_and_a_credit_for_no_order_until_removed() {
    let run = credited_orders("audit_checks_doubles").await;
    let told = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = run.ids.iter().map(Uuid::to_string).collect();
    std::fs::write(told.path(), lines.join("\n")).unwrap();
    let told = ["--acknowledged", told.path().to_str().unwrap()];
    let (code, findings) = run.audit(&told).await;
    assert_eq!(
        (code, &findings["consistent"]),
        (0, &Value::Bool(true)),
        "{findings}"
    );
    let (orders_db, rewards_db) = (run.env.orders_db().await, run.env.rewards_db().await);

    // (a) A second order for the first request, credited: what a retry
    // placed as a new order leaves. Orders, ledger and balance agree with
    // each other; only what the client was told shows it.
    let second = Uuid::now_v7();
    sqlx::query(
        "WITH o AS (INSERT INTO orders (id, customer_id, currency, total_minor)
                    SELECT $2, customer_id, currency, total_minor FROM orders WHERE id = $1)
         INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
         SELECT $2, line_no, sku, quantity, unit_price_minor FROM order_lines WHERE order_id = $1",
    )
    .bind(run.ids[0])
    .bind(second)
    .execute(&orders_db)
    .await
    .unwrap();
    credit(&rewards_db, run.ids[0], second).await;
    let (code, findings) = run.audit(&told).await;
    assert_eq!(code, 1, "{findings}");
    assert_eq!(
        (
            findings["orders"].as_u64(),
            findings["acknowledged"].as_u64()
        ),
        (Some(ORDERS as u64 + 1), Some(ORDERS as u64))
    );
    assert_eq!(
        ids(&findings, "orders_not_acknowledged", ""),
        [second.to_string()]
    );
    only(&findings, &["orders_not_acknowledged"]);
    uncredit(&rewards_db, second).await;
    sqlx::query("DELETE FROM orders WHERE id = $1")
        .bind(second)
        .execute(&orders_db)
        .await
        .unwrap();
    let (code, findings) = run.audit(&told).await;
    assert_eq!(code, 0, "{findings}");

    // (b) A credit, with its points in the balance, for an order
    // order-service does not hold.
    let ghost = Uuid::now_v7();
    credit(&rewards_db, run.ids[1], ghost).await;
    let (code, findings) = run.audit(&told).await;
    assert_eq!(code, 1, "{findings}");
    assert_eq!(
        ids(&findings, "credits_without_order", "order_id"),
        [ghost.to_string()]
    );
    assert_eq!(
        ids(&findings, "balances_not_matching_orders", "customer_id"),
        ["una"]
    );
    only(
        &findings,
        &["credits_without_order", "balances_not_matching_orders"],
    );
    uncredit(&rewards_db, ghost).await;
    let (code, findings) = run.audit(&told).await;
    assert_eq!(
        (code, &findings["consistent"]),
        (0, &Value::Bool(true)),
        "{findings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_a_credit_counted_twice_in_a_balance_and_an_order_published_twice() {
    let run = credited_orders("audit_checks_counted_twice").await;
    let rewards_db = run.env.rewards_db().await;

    // (c) One credit's points added to the balance a second time: the
    // ledger still holds one row per order.
    let points: i64 = sqlx::query_scalar(
        "WITH l AS (SELECT customer_id, points FROM reward_ledger WHERE order_id = $1)
         UPDATE reward_accounts a SET balance = a.balance + l.points FROM l
         WHERE a.customer_id = l.customer_id RETURNING l.points",
    )
    .bind(run.ids[2])
    .fetch_one(&rewards_db)
    .await
    .unwrap();
    let (code, findings) = run.audit(&[]).await;
    assert_eq!(code, 1, "{findings}");
    let wrong = &findings["balances_not_matching_orders"][0];
    assert_eq!(
        wrong["balance"].as_i64().unwrap() - wrong["expected"].as_i64().unwrap(),
        points
    );
    only(&findings, &["balances_not_matching_orders"]);
    sqlx::query("UPDATE reward_accounts SET balance = balance - $1")
        .bind(points)
        .execute(&rewards_db)
        .await
        .unwrap();
    let (code, findings) = run.audit(&[]).await;
    assert_eq!(code, 0, "{findings}");

    // (d) The same order published a second time under another event id:
    // the ledger credits it once, the stream holds it twice.
    let sequence: i64 =
        sqlx::query_scalar("SELECT stream_sequence FROM reward_ledger WHERE order_id = $1")
            .bind(run.ids[3])
            .fetch_one(&rewards_db)
            .await
            .unwrap();
    let names = Names::new(run.env.events_prefix()).unwrap();
    let js = run.env.jetstream().await;
    let stream = js.get_stream(names.stream()).await.unwrap();
    let stored = stream.get_raw_message(sequence as u64).await.unwrap();
    let first = Envelope::<OrderPlaced>::decode(&stored.payload).unwrap();
    let again = Envelope::new(Uuid::now_v7(), first.occurred_at, first.payload);
    let published = shared_events::jetstream::publish(
        &js,
        names.order_placed_subject(),
        again.event_id,
        None,
        again.to_bytes(),
    )
    .await
    .expect("publishing the order again");
    assert_credited_exactly(&run.env, ORDERS as i64).await;
    let (code, findings) = run.audit(&[]).await;
    assert_eq!(code, 1, "{findings}");
    assert_eq!(
        ids(&findings, "orders_published_more_than_once", "order_id"),
        [run.ids[3].to_string()]
    );
    let mut event_ids = vec![first.event_id.to_string(), again.event_id.to_string()];
    event_ids.sort();
    assert_eq!(
        findings["orders_published_more_than_once"][0]["event_ids"],
        serde_json::json!(event_ids)
    );
    only(&findings, &["orders_published_more_than_once"]);
    stream
        .delete_message(published.stream_sequence)
        .await
        .unwrap();
    let (code, findings) = run.audit(&[]).await;
    assert_eq!(
        (code, &findings["consistent"]),
        (0, &Value::Bool(true)),
        "{findings}"
    );
}
