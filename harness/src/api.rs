//! What a client of the services does, and what the tests count.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::env::TestEnv;
use crate::wait::{CONVERGE, eventually};

/// A `POST /orders` body in EUR.
pub fn order(customer_id: &str, lines: &[(&str, i64, i64)]) -> Value {
    json!({
        "customer_id": customer_id,
        "currency": "EUR",
        "lines": lines
            .iter()
            .map(|(sku, quantity, unit_price_minor)| json!({
                "sku": sku, "quantity": quantity, "unit_price_minor": unit_price_minor
            }))
            .collect::<Vec<_>>(),
    })
}

/// Places an order, with an `Idempotency-Key` if given.
pub async fn place_order(
    http: &reqwest::Client,
    base_url: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = http.post(format!("{base_url}/orders")).json(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await
}

/// Places an order on a service whose crash point kills it before it
/// answers, and asserts that it did.
pub async fn place_into_crash(
    http: &reqwest::Client,
    service: &mut crate::service::Service,
    body: &Value,
    idempotency_key: Option<&str>,
) {
    let answer = place_order(http, service.url(), body, idempotency_key).await;
    assert!(answer.is_err(), "the process died before answering");
    service.assert_crashed().await;
}

/// Places an order while a crash point of a background worker (the CDC
/// reader's or the projector's) is armed: the worker may kill the process
/// before or after the answer (201, or 202 in self-read) reaches the client,
/// so either is accepted; then asserts the crash. The order was committed or
/// published either way: the worker only sees what was.
pub async fn place_racing_a_crash(
    http: &reqwest::Client,
    service: &mut crate::service::Service,
    body: &Value,
) {
    if let Ok(response) = place_order(http, service.url(), body, None).await {
        assert!(
            response.status().is_success(),
            "POST /orders: {}",
            response.status()
        );
    }
    service.assert_crashed().await;
}

/// Places an order that must be accepted with 201; returns its id.
pub async fn place_ok(http: &reqwest::Client, base_url: &str, body: &Value) -> uuid::Uuid {
    let response = place_order(http, base_url, body, None)
        .await
        .expect("POST /orders");
    assert_eq!(response.status(), 201, "POST /orders");
    let order: Value = response.json().await.expect("an order body");
    order["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a uuid")
}

/// `GET url` as JSON (any status).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON body")
}

/// Runs `order-events audit --json` (and `extra`) against the two services
/// of `env`; its exit code and findings.
pub async fn audit(
    env: &TestEnv,
    orders_url: &str,
    rewards_url: &str,
    extra: &[&str],
) -> anyhow::Result<(i32, Value)> {
    let output = tokio::process::Command::new(crate::service::binary_path("order-events")?)
        .args([
            "audit",
            "--json",
            "--orders",
            orders_url,
            "--rewards",
            rewards_url,
        ])
        .args([
            "--nats-url",
            env.nats_url(),
            "--events-prefix",
            env.events_prefix(),
        ])
        .args(extra)
        .output()
        .await?;
    let findings = serde_json::from_slice(&output.stdout).map_err(|_| {
        anyhow::anyhow!(
            "audit printed no JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let code = output
        .status
        .code()
        .ok_or_else(|| anyhow::anyhow!("audit was killed"))?;
    Ok((code, findings))
}

/// Rows in a table (tests read the databases directly; services never do
/// each other's).
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("counting rows")
}

/// Credits in rewards-service's ledger (its reversals are not credits).
pub async fn credits(rewards: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM reward_ledger WHERE kind = 'credit'")
        .fetch_one(rewards)
        .await
        .expect("counting credits")
}

/// The ledger against independent truths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Credits in the ledger (reversals are not counted).
    pub credits: i64,
    /// Customers whose balance is not the sum of their ledger points
    /// (credits less reversals): a credit counted twice (or lost) in the
    /// balance.
    pub wrong_balances: i64,
    /// Credits whose points are not one per whole currency unit of the
    /// order's total as order-service stores it (or whose order it does not
    /// know), and reversals that do not take back exactly as many.
    pub wrong_points: i64,
}

impl LedgerCheck {
    /// `n` credits, every balance and every credit right.
    pub fn exact(n: i64) -> Self {
        Self {
            credits: n,
            wrong_balances: 0,
            wrong_points: 0,
        }
    }
}

/// Checks rewards-service's ledger and balances against each other and
/// against order-service's orders.
pub async fn check_ledger(env: &TestEnv) -> LedgerCheck {
    let rewards = env.rewards_db().await;
    let credits = credits(&rewards).await;
    let wrong_balances: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM reward_accounts a
         WHERE balance <> (SELECT coalesce(sum(points), 0) FROM reward_ledger l
                           WHERE l.customer_id = a.customer_id)",
    )
    .fetch_one(&rewards)
    .await
    .expect("comparing balances with the ledger");
    // A reversal's points, negated, are its credit's.
    let ledger: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT order_id, CASE kind WHEN 'credit' THEN points ELSE -points END FROM reward_ledger",
    )
    .fetch_all(&rewards)
    .await
    .expect("reading the ledger");
    let orders: std::collections::HashMap<uuid::Uuid, (i64, String)> =
        sqlx::query_as::<_, (uuid::Uuid, i64, String)>(
            "SELECT id, total_minor, currency FROM orders",
        )
        .fetch_all(&env.orders_db().await)
        .await
        .expect("reading the orders")
        .into_iter()
        .map(|(id, total, currency)| (id, (total, currency)))
        .collect();
    let wrong_points = ledger
        .iter()
        .filter(|(order_id, points)| {
            let expected = orders.get(order_id).and_then(|(total, currency)| {
                shared_events::Currency::from_code(currency).map(|c| c.whole_units(*total))
            });
            expected != Some(*points)
        })
        .count();
    LedgerCheck {
        credits,
        wrong_balances,
        wrong_points: i64::try_from(wrong_points).expect("a count"),
    }
}

/// Self-read: waits until the projector has written `n` orders and has nothing in
/// flight, then asserts exactly `n`.
pub async fn assert_projected_exactly(env: &TestEnv, n: i64) {
    let orders = env.orders_db().await;
    eventually(&format!("{n} projected orders"), CONVERGE, || async {
        (count(&orders, "orders").await >= n).then_some(())
    })
    .await;
    env.wait_until_consumed_by("order-history").await;
    assert_eq!(count(&orders, "orders").await, n);
}

/// Waits until `n` orders are credited and rewards-service's consumer has
/// nothing left in flight, then asserts that exactly `n` are, every balance
/// is the sum of its credits, and every credit has the points of its order.
pub async fn assert_credited_exactly(env: &TestEnv, n: i64) {
    let rewards = env.rewards_db().await;
    eventually(&format!("{n} credits"), CONVERGE, || async {
        (credits(&rewards).await >= n).then_some(())
    })
    .await;
    env.wait_until_consumed_by("rewards").await;
    assert_eq!(check_ledger(env).await, LedgerCheck::exact(n));
}

/// What one order-service instance says it published (`order_events_published_total`
/// on its `/metrics`, summed over sources), duplicates included: double
/// publishing shows here even when the broker's duplicate window hid it.
pub async fn published_by(http: &reqwest::Client, base_url: &str) -> u64 {
    metric_sum(http, base_url, "order_events_published_total").await
}

/// The sum of every series of the metric `name` a service reports on
/// `/metrics` (0 when it has none yet).
pub async fn metric_sum(http: &reqwest::Client, base_url: &str, name: &str) -> u64 {
    let text = http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse::<f64>().expect("a metric value") as u64)
        .sum()
}
