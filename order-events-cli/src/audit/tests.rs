use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use rewards_service::db::EntryKind;
use uuid::Uuid;

use super::checks::{Observed, compare};
use super::{Credit, Order};

fn order(customer: &str, total_minor: i64) -> Order {
    Order {
        id: Uuid::now_v7(),
        customer_id: customer.into(),
        currency: "EUR".into(),
        total_minor,
        lines: vec![],
        created_at: Utc::now(),
    }
}

fn credit(order: &Order, points: i64) -> Credit {
    Credit {
        order_id: order.id,
        kind: EntryKind::Credit,
        event_id: Uuid::now_v7(),
        customer_id: order.customer_id.clone(),
        points,
        order_total_minor: order.total_minor,
        currency: order.currency.clone(),
    }
}

/// The reversal of `credit`, taking back `points`.
fn reversal(credit: &Credit, points: i64) -> Credit {
    Credit {
        kind: EntryKind::Reversal,
        event_id: shared_events::cancelled_event_id(credit.order_id),
        points: -points,
        ..credit.clone()
    }
}

/// Each credit in the stream once, and every balance the sum of its
/// customer's credits (as the one statement that writes both leaves it).
fn observed(orders: Vec<Order>, credits: Vec<Credit>) -> Observed {
    let mut balances = BTreeMap::new();
    for o in &orders {
        balances.insert(o.customer_id.clone(), 0);
    }
    for c in &credits {
        *balances.entry(c.customer_id.clone()).or_default() += c.points;
    }
    let published = credits
        .iter()
        .map(|c| (c.order_id, BTreeSet::from([c.event_id])))
        .collect();
    Observed {
        orders,
        credits,
        reversals: Vec::new(),
        balances,
        published,
        acknowledged: None,
    }
}

#[test]
fn every_kind_of_inconsistency_is_found() {
    let (ok, missing, wrong) = (order("al", 2500), order("bo", 100), order("cy", 999));
    let stray = order("di", 700);
    let credits = vec![credit(&ok, 25), credit(&wrong, 10), credit(&stray, 7)];
    let findings = compare(observed(vec![ok, missing.clone(), wrong.clone()], credits));
    assert!(!findings.consistent);
    let missing_ids: Vec<Uuid> = findings
        .orders_without_credit
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(missing_ids, vec![missing.id]);
    assert_eq!(findings.credits_with_wrong_points.len(), 1);
    assert_eq!(findings.credits_with_wrong_points[0].expected, 9);
    let orphans: Vec<Uuid> = findings
        .credits_without_order
        .iter()
        .map(|c| c.order_id)
        .collect();
    assert_eq!(orphans, vec![stray.id]);
    // cy's balance holds the wrong points, di's those of no order.
    let wrong_balances: Vec<(&str, i64, i64)> = findings
        .balances_not_matching_orders
        .iter()
        .map(|b| (b.customer_id.as_str(), b.balance, b.expected))
        .collect();
    assert_eq!(wrong_balances, [("cy", 10, 9), ("di", 7, 0)]);
}

#[test]
fn a_credit_counted_twice_in_a_balance_is_found() {
    let a = order("al", 2599);
    let mut seen = observed(vec![a.clone()], vec![credit(&a, 25)]);
    *seen.balances.get_mut("al").unwrap() += 25;
    let findings = compare(seen);
    assert!(!findings.consistent);
    assert_eq!(findings.balances_not_matching_orders.len(), 1);
    assert_eq!(findings.balances_not_matching_orders[0].expected, 25);
}

#[test]
fn an_order_published_under_two_event_ids_is_found() {
    let a = order("al", 2599);
    let mut seen = observed(vec![a.clone()], vec![credit(&a, 25)]);
    seen.published
        .get_mut(&a.id)
        .unwrap()
        .insert(Uuid::now_v7());
    let findings = compare(seen);
    assert!(!findings.consistent);
    let twice: Vec<(Uuid, usize)> = findings
        .orders_published_more_than_once
        .iter()
        .map(|p| (p.order_id, p.event_ids.len()))
        .collect();
    assert_eq!(twice, [(a.id, 2)]);
}

#[test]
fn a_repair_published_beside_the_original_event_is_no_double() {
    let a = order("al", 2599);
    let mut seen = observed(vec![a.clone()], vec![credit(&a, 25)]);
    seen.published
        .get_mut(&a.id)
        .unwrap()
        .insert(shared_events::placed_event_id(a.id));
    assert!(compare(seen).consistent);
}

#[test]
fn a_second_order_for_one_request_shows_against_the_acknowledged_orders() {
    let told = order("al", 1000);
    let mut second = told.clone();
    second.id = Uuid::now_v7();
    let lost = Uuid::now_v7();
    let mut seen = observed(
        vec![told.clone(), second.clone()],
        vec![credit(&told, 10), credit(&second, 10)],
    );
    seen.acknowledged = Some(BTreeSet::from([told.id, lost]));
    let findings = compare(seen);
    assert!(!findings.consistent);
    assert_eq!(findings.orders_not_acknowledged, [second.id]);
    assert_eq!(findings.acknowledged_orders_not_held, [lost]);
    // Orders, credits and balances agree with each other: without the
    // clients' answers, the second order is an order like any other.
    assert!(findings.balances_not_matching_orders.is_empty());
}

#[test]
fn matching_orders_credits_balances_and_events_are_consistent() {
    let (a, b) = (order("al", 2599), order("al", 100));
    let mut seen = observed(
        vec![a.clone(), b.clone()],
        vec![credit(&a, 25), credit(&b, 1)],
    );
    seen.acknowledged = Some(BTreeSet::from([a.id, b.id]));
    seen.published.entry(a.id).or_default();
    let findings = compare(seen);
    assert!(findings.consistent, "{findings:?}");
    assert_eq!(findings.customers, 1);
}

#[test]
fn a_reversal_is_no_credit_and_the_balance_is_net_of_it() {
    let (kept, cancelled) = (order("al", 1000), order("al", 2599));
    let credits = vec![credit(&kept, 10), credit(&cancelled, 25)];
    let reversed = reversal(&credits[1], 25);
    let mut seen = observed(vec![kept, cancelled], credits);
    *seen.balances.get_mut("al").unwrap() -= 25;
    seen.reversals.push(reversed);
    let findings = compare(seen);
    assert!(findings.consistent, "{findings:?}");
    assert_eq!((findings.credits, findings.reversals), (2, 1));
}

#[test]
fn a_reversal_taking_back_other_points_than_its_credit_gave_is_found() {
    let (a, b) = (order("al", 2599), order("bo", 1000));
    let credits = vec![credit(&a, 25)];
    let wrong = reversal(&credits[0], 24);
    let without_credit = reversal(&credit(&b, 10), 10);
    let mut seen = observed(vec![a, b], credits);
    *seen.balances.get_mut("al").unwrap() -= 24;
    *seen.balances.get_mut("bo").unwrap() -= 10;
    seen.reversals = vec![wrong, without_credit];
    let findings = compare(seen);
    assert!(!findings.consistent);
    let wrong: Vec<(i64, i64)> = findings
        .reversals_not_matching_credit
        .iter()
        .map(|r| (r.expected, r.reversed))
        .collect();
    assert_eq!(wrong, [(-25, -24), (0, -10)]);
    // al keeps 1 point of a cancelled order; bo lost 10 he never had.
    let balances: Vec<(&str, i64, i64)> = findings
        .balances_not_matching_orders
        .iter()
        .map(|b| (b.customer_id.as_str(), b.balance, b.expected))
        .collect();
    assert_eq!(balances, [("al", 1, 0), ("bo", -10, 0)]);
}
