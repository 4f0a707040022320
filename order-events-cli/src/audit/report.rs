//! The audit's findings as a table: each kind with its count, then up to
//! [`EXAMPLES`] examples of each by order id.

use std::fmt::Display;

use super::checks::Findings;

/// Examples printed per kind; `--json` lists them all.
const EXAMPLES: usize = 10;

pub(super) fn print_table(findings: &Findings) {
    print!(
        "orders: {}   credits: {}   reversals: {}   customers: {}",
        findings.orders, findings.credits, findings.reversals, findings.customers
    );
    match findings.acknowledged {
        Some(n) => println!("   acknowledged: {n}"),
        None => println!(),
    }
    println!();
    println!("{:<44} {:>6}", "finding", "count");
    let kinds: [(&str, Vec<String>); 8] = [
        (
            "orders without a credit",
            lines(&findings.orders_without_credit, |o| {
                format!(
                    "not credited: order {} (customer {}, {} {})",
                    o.id, o.customer_id, o.total_minor, o.currency
                )
            }),
        ),
        (
            "credits with the wrong points",
            lines(&findings.credits_with_wrong_points, |w| {
                format!(
                    "wrong points: order {} credited {}, expected {}",
                    w.order_id, w.credited, w.expected
                )
            }),
        ),
        (
            "credits for orders order-service lacks",
            lines(&findings.credits_without_order, |c| {
                format!(
                    "no such order: order {} credited {} (event {})",
                    c.order_id, c.points, c.event_id
                )
            }),
        ),
        (
            "reversals not taking back their credit",
            lines(&findings.reversals_not_matching_credit, |r| {
                format!(
                    "wrong reversal: order {} takes back {}, its credit gave {}",
                    r.order_id, -r.reversed, -r.expected
                )
            }),
        ),
        (
            "balances not the points of their orders",
            lines(&findings.balances_not_matching_orders, |b| {
                format!(
                    "wrong balance: customer {} has {}, their credited orders earn {}",
                    b.customer_id, b.balance, b.expected
                )
            }),
        ),
        (
            "orders published as two events",
            lines(&findings.orders_published_more_than_once, |p| {
                format!(
                    "published {} times: order {} (events {})",
                    p.event_ids.len(),
                    p.order_id,
                    joined(&p.event_ids)
                )
            }),
        ),
        (
            "acknowledged orders order-service lacks",
            lines(&findings.acknowledged_orders_not_held, |id| {
                format!("acknowledged, not held: order {id}")
            }),
        ),
        (
            "orders no client was told about",
            lines(&findings.orders_not_acknowledged, |id| {
                format!("not acknowledged: order {id}")
            }),
        ),
    ];
    for (kind, examples) in &kinds {
        println!("{kind:<44} {:>6}", examples.len());
    }
    for (_, examples) in &kinds {
        for example in examples.iter().take(EXAMPLES) {
            println!("  {example}");
        }
        if examples.len() > EXAMPLES {
            println!("  … and {} more", examples.len() - EXAMPLES);
        }
    }
    if findings.acknowledged.is_none() {
        println!();
        println!(
            "(a second order for one request looks like any order: pass --acknowledged \
             with the order ids the clients were told about to find it)"
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

fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> Vec<String> {
    items.iter().map(line).collect()
}

fn joined(items: &[impl Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
