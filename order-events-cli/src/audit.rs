use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared_events::{Currency, Names, OrderPlaced, OrderPlacedLine};
use uuid::Uuid;

use crate::AuditArgs;

/// An order as order-service lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Order {
    id: Uuid,
    customer_id: String,
    currency: String,
    total_minor: i64,
    /// order-service lists lines with the fields of the event's lines.
    lines: Vec<OrderPlacedLine>,
    created_at: DateTime<Utc>,
}

/// A credit as rewards-service lists it.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Credit {
    order_id: Uuid,
    event_id: Uuid,
    customer_id: String,
    points: i64,
    order_total_minor: i64,
    currency: String,
}

#[derive(Deserialize)]
struct OrderPage {
    orders: Vec<Order>,
    next_after: Option<Uuid>,
}

#[derive(Deserialize)]
struct LedgerPage {
    entries: Vec<Credit>,
    next_after: Option<Uuid>,
}

#[derive(Debug, Serialize)]
struct WrongPoints {
    order_id: Uuid,
    expected: i64,
    credited: i64,
}

#[derive(Debug, Serialize)]
struct Findings {
    orders: usize,
    credits: usize,
    orders_without_credit: Vec<Order>,
    orders_credited_more_than_once: BTreeMap<Uuid, usize>,
    credits_with_wrong_points: Vec<WrongPoints>,
    credits_without_order: Vec<Credit>,
    consistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    republished: Option<usize>,
}

/// Audits (and repairs); `Ok(true)` when nothing is left inconsistent.
pub async fn run(args: &AuditArgs) -> anyhow::Result<bool> {
    let http = reqwest::Client::new();
    let orders = fetch_orders(&http, &args.orders).await?;
    let credits = fetch_credits(&http, &args.rewards).await?;
    let mut findings = compare(orders, credits);
    let mut consistent = findings.consistent;
    if args.repair && !findings.orders_without_credit.is_empty() {
        let republished = republish(args, &findings.orders_without_credit).await?;
        findings.republished = Some(republished);
        consistent = findings.orders_credited_more_than_once.is_empty()
            && findings.credits_with_wrong_points.is_empty()
            && findings.credits_without_order.is_empty();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        print_table(&findings);
    }
    Ok(consistent)
}

async fn fetch_orders(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Order>> {
    let mut all = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut url = format!("{base}/orders?limit=500");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let page: OrderPage = get(http, &url).await?;
        all.extend(page.orders);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

async fn fetch_credits(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Credit>> {
    let mut all = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut url = format!("{base}/ledger?limit=1000");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let page: LedgerPage = get(http, &url).await?;
        all.extend(page.entries);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    response
        .json()
        .await
        .with_context(|| format!("reading {url}"))
}

fn compare(orders: Vec<Order>, credits: Vec<Credit>) -> Findings {
    let mut credits_by_order: HashMap<Uuid, Vec<&Credit>> = HashMap::new();
    for credit in &credits {
        credits_by_order
            .entry(credit.order_id)
            .or_default()
            .push(credit);
    }
    let by_id: HashMap<Uuid, &Order> = orders.iter().map(|o| (o.id, o)).collect();
    let mut missing = Vec::new();
    let mut doubled = BTreeMap::new();
    let mut wrong = Vec::new();
    for order in &orders {
        let Some(found) = credits_by_order.get(&order.id) else {
            missing.push(order.clone());
            continue;
        };
        if found.len() > 1 {
            doubled.insert(order.id, found.len());
        }
        let expected =
            Currency::from_code(&order.currency).map(|c| c.whole_units(order.total_minor));
        for credit in found {
            if Some(credit.points) != expected || credit.order_total_minor != order.total_minor {
                wrong.push(WrongPoints {
                    order_id: order.id,
                    expected: expected.unwrap_or(0),
                    credited: credit.points,
                });
            }
        }
    }
    let orphans: Vec<Credit> = credits
        .iter()
        .filter(|c| !by_id.contains_key(&c.order_id))
        .cloned()
        .collect();
    let consistent =
        missing.is_empty() && doubled.is_empty() && wrong.is_empty() && orphans.is_empty();
    Findings {
        orders: orders.len(),
        credits: credits.len(),
        orders_without_credit: missing,
        orders_credited_more_than_once: doubled,
        credits_with_wrong_points: wrong,
        credits_without_order: orphans,
        consistent,
        republished: None,
    }
}

/// Publishes `OrderPlaced` for each order again, with the event id derived
/// from the order: however often it runs, each order is credited once.
async fn republish(args: &AuditArgs, orders: &[Order]) -> anyhow::Result<usize> {
    let names = Names::new(&args.events_prefix)?;
    let client = service_kit::startup::connect_nats_once(&args.nats_url, "order-events").await?;
    let js = async_nats::jetstream::new(client);
    let events = orders.iter().map(|order| OrderPlaced {
        order_id: order.id,
        customer_id: order.customer_id.clone(),
        currency: order.currency.clone(),
        total_minor: order.total_minor,
        lines: order.lines.clone(),
        placed_at: order.created_at,
    });
    Ok(shared_events::jetstream::republish_orders(&js, &names, events).await?)
}

fn print_table(findings: &Findings) {
    println!(
        "orders: {}   credits: {}",
        findings.orders, findings.credits
    );
    println!();
    println!("{:<34} {:>6}", "finding", "count");
    println!(
        "{:<34} {:>6}",
        "orders without a credit",
        findings.orders_without_credit.len()
    );
    println!(
        "{:<34} {:>6}",
        "orders credited more than once",
        findings.orders_credited_more_than_once.len()
    );
    println!(
        "{:<34} {:>6}",
        "credits with the wrong points",
        findings.credits_with_wrong_points.len()
    );
    println!(
        "{:<34} {:>6}",
        "credits without an order",
        findings.credits_without_order.len()
    );
    for order in &findings.orders_without_credit {
        println!(
            "  not credited: order {} (customer {}, {} {})",
            order.id, order.customer_id, order.total_minor, order.currency
        );
    }
    for (order_id, times) in &findings.orders_credited_more_than_once {
        println!("  credited {times} times: order {order_id}");
    }
    for wrong in &findings.credits_with_wrong_points {
        println!(
            "  wrong points: order {} credited {}, expected {}",
            wrong.order_id, wrong.credited, wrong.expected
        );
    }
    for credit in &findings.credits_without_order {
        println!(
            "  no such order: credit {} for order {}",
            credit.event_id, credit.order_id
        );
    }
    println!();
    match findings.republished {
        Some(n) => println!(
            "repair: re-published OrderPlaced for {n} order(s); they are credited once consumed"
        ),
        None if findings.consistent => println!("CONSISTENT"),
        None => println!("INCONSISTENT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(total_minor: i64) -> Order {
        Order {
            id: Uuid::now_v7(),
            customer_id: "alice".into(),
            currency: "EUR".into(),
            total_minor,
            lines: vec![],
            created_at: Utc::now(),
        }
    }

    fn credit(order: &Order, points: i64) -> Credit {
        Credit {
            order_id: order.id,
            event_id: Uuid::now_v7(),
            customer_id: order.customer_id.clone(),
            points,
            order_total_minor: order.total_minor,
            currency: order.currency.clone(),
        }
    }

    #[test]
    fn every_kind_of_inconsistency_is_found() {
        let (ok, missing, doubled, wrong) = (order(2500), order(100), order(300), order(999));
        let stray = order(700);
        let credits = vec![
            credit(&ok, 25),
            credit(&doubled, 3),
            credit(&doubled, 3),
            credit(&wrong, 10),
            credit(&stray, 7),
        ];
        let findings = compare(
            vec![ok, missing.clone(), doubled.clone(), wrong.clone()],
            credits,
        );
        assert!(!findings.consistent);
        let missing_ids: Vec<Uuid> = findings
            .orders_without_credit
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(missing_ids, vec![missing.id]);
        assert_eq!(
            findings.orders_credited_more_than_once.get(&doubled.id),
            Some(&2)
        );
        assert_eq!(findings.credits_with_wrong_points.len(), 1);
        assert_eq!(findings.credits_with_wrong_points[0].expected, 9);
        assert_eq!(findings.credits_without_order.len(), 1);
    }

    #[test]
    fn matching_orders_and_credits_are_consistent() {
        let a = order(2599);
        let findings = compare(vec![a.clone()], vec![credit(&a, 25)]);
        assert!(findings.consistent);
    }
}
