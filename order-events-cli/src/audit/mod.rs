//! `order-events audit`: reads order-service's orders, rewards-service's
//! ledger (credits and reversals) and balances (through their HTTP APIs)
//! and the stream's `OrderPlaced` events, runs the [`checks`], prints each
//! kind of inconsistency with its count and examples, and with `--repair`
//! re-publishes the orders without a credit.

mod checks;
mod read;
mod report;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use rewards_service::db::EntryKind;
use serde::{Deserialize, Serialize};
use shared_events::{Names, OrderPlaced, OrderPlacedLine};
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

/// A ledger entry as rewards-service lists it: a credit, or the reversal
/// of one (negative points).
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Credit {
    order_id: Uuid,
    /// A ledger that lists no kind holds credits only.
    #[serde(default)]
    kind: EntryKind,
    event_id: Uuid,
    customer_id: String,
    points: i64,
    order_total_minor: i64,
    currency: String,
}

/// Audits (and repairs); `Ok(true)` when nothing is left inconsistent.
pub async fn run(args: &AuditArgs) -> anyhow::Result<bool> {
    let observed = read::everything(args).await?;
    let mut findings = checks::compare(observed);
    let mut consistent = findings.consistent;
    if args.repair && !findings.orders_without_credit.is_empty() {
        let republished = republish(args, &findings.orders_without_credit).await?;
        findings.republished = Some(republished);
        consistent = findings.consistent_but_missing_credits();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        report::print_table(&findings);
    }
    Ok(consistent)
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
