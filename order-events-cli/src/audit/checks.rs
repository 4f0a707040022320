//! The audit's checks, each against a truth the other side cannot have
//! written: order-service's orders against rewards-service's ledger and
//! balances, the stream's events per order, and, when given, the order ids
//! the clients were told about. A pure function of what was read.
//!
//! A reversal is never a credit: an order's credit is checked against the
//! order, its reversal against the credit (it takes back exactly its
//! points), and a balance against the points of the customer's credited
//! orders less those of the reversed ones.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rewards_service::domain::points_for;
use serde::Serialize;
use shared_events::Currency;
use uuid::Uuid;

use super::{Credit, Order};

/// What the audit read.
pub struct Observed {
    pub orders: Vec<Order>,
    /// The ledger's credits.
    pub credits: Vec<Credit>,
    /// The ledger's reversals: a cancelled order's credit taken back.
    pub reversals: Vec<Credit>,
    /// Each customer of an order or a credit, with their balance (0 without
    /// an account).
    pub balances: BTreeMap<String, i64>,
    /// Each order whose `OrderPlaced` the stream holds, with the distinct
    /// event ids it holds it under.
    pub published: HashMap<Uuid, BTreeSet<Uuid>>,
    /// The orders the clients were told about, when the operator has them.
    pub acknowledged: Option<BTreeSet<Uuid>>,
}

#[derive(Debug, Serialize)]
pub struct WrongPoints {
    pub order_id: Uuid,
    pub expected: i64,
    pub credited: i64,
}

/// A balance that is not the points of the customer's credited orders.
#[derive(Debug, Serialize)]
pub struct WrongBalance {
    pub customer_id: String,
    pub balance: i64,
    /// The points of this customer's orders that have a credit and no
    /// reversal, each computed from the order as order-service holds it.
    pub expected: i64,
}

/// A reversal that does not take back exactly its order's credit.
#[derive(Debug, Serialize)]
pub struct WrongReversal {
    pub order_id: Uuid,
    /// The negated points of the order's credit (0 without one).
    pub expected: i64,
    pub reversed: i64,
}

/// An order the stream holds as two events or more, besides the one under
/// the id derived from the order.
#[derive(Debug, Serialize)]
pub struct PublishedTwice {
    pub order_id: Uuid,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, Serialize)]
pub struct Findings {
    pub orders: usize,
    pub credits: usize,
    pub reversals: usize,
    pub customers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<usize>,
    pub orders_without_credit: Vec<Order>,
    pub credits_with_wrong_points: Vec<WrongPoints>,
    /// Credits for orders order-service does not hold.
    pub credits_without_order: Vec<Credit>,
    /// Reversals taking back other points than their order's credit gave
    /// (or reversing no credit).
    pub reversals_not_matching_credit: Vec<WrongReversal>,
    /// A credit counted twice (or lost, or for another customer) in a balance.
    pub balances_not_matching_orders: Vec<WrongBalance>,
    /// One order in the stream under two event ids (not counting the id a
    /// re-publish derives from the order): published twice.
    pub orders_published_more_than_once: Vec<PublishedTwice>,
    /// With `--acknowledged`: orders a client was told about that
    /// order-service does not hold.
    pub acknowledged_orders_not_held: Vec<Uuid>,
    /// With `--acknowledged`: orders order-service holds that no client was
    /// told about — a second order for one request, say.
    pub orders_not_acknowledged: Vec<Uuid>,
    pub consistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub republished: Option<usize>,
}

impl Findings {
    /// Whether everything but the missing credits is consistent: what
    /// `--repair` leaves once it re-published those.
    pub fn consistent_but_missing_credits(&self) -> bool {
        self.credits_with_wrong_points.is_empty()
            && self.credits_without_order.is_empty()
            && self.reversals_not_matching_credit.is_empty()
            && self.balances_not_matching_orders.is_empty()
            && self.orders_published_more_than_once.is_empty()
            && self.acknowledged_orders_not_held.is_empty()
            && self.orders_not_acknowledged.is_empty()
    }
}

/// The points an order earns, by the rewards rule itself.
fn points(order: &Order) -> Option<i64> {
    Currency::from_code(&order.currency).map(|c| points_for(order.total_minor, c))
}

pub fn compare(observed: Observed) -> Findings {
    let Observed {
        orders,
        credits,
        reversals,
        balances,
        published,
        acknowledged,
    } = observed;
    let credit_of: HashMap<Uuid, &Credit> = credits.iter().map(|c| (c.order_id, c)).collect();
    let reversed: HashSet<Uuid> = reversals.iter().map(|r| r.order_id).collect();
    let held: HashSet<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut expected_balances: BTreeMap<&str, i64> = BTreeMap::new();
    for order in &orders {
        let Some(credit) = credit_of.get(&order.id) else {
            missing.push(order.clone());
            continue;
        };
        let expected = points(order);
        // A cancelled order's points were taken back.
        if !reversed.contains(&order.id) {
            *expected_balances.entry(&order.customer_id).or_default() += expected.unwrap_or(0);
        }
        if Some(credit.points) != expected || credit.order_total_minor != order.total_minor {
            wrong.push(WrongPoints {
                order_id: order.id,
                expected: expected.unwrap_or(0),
                credited: credit.points,
            });
        }
    }
    let orphans: Vec<Credit> = credits
        .iter()
        .filter(|c| !held.contains(&c.order_id))
        .cloned()
        .collect();
    let wrong_reversals: Vec<WrongReversal> = reversals
        .iter()
        .filter_map(|r| {
            let expected = credit_of.get(&r.order_id).map_or(0, |c| -c.points);
            (r.points != expected || !credit_of.contains_key(&r.order_id)).then_some(
                WrongReversal {
                    order_id: r.order_id,
                    expected,
                    reversed: r.points,
                },
            )
        })
        .collect();
    let wrong_balances: Vec<WrongBalance> = balances
        .iter()
        .filter_map(|(customer_id, &balance)| {
            let expected = expected_balances
                .get(customer_id.as_str())
                .copied()
                .unwrap_or(0);
            (balance != expected).then(|| WrongBalance {
                customer_id: customer_id.clone(),
                balance,
                expected,
            })
        })
        .collect();
    // A re-publish (`--repair`, `cdc resync`) uses the id derived from the
    // order, which the consumers credit once beside any other: only two
    // other ids are a double publish.
    let mut published_twice: Vec<PublishedTwice> = published
        .into_iter()
        .filter(|(order_id, event_ids)| {
            let derived = shared_events::placed_event_id(*order_id);
            event_ids.iter().filter(|id| **id != derived).count() > 1
        })
        .map(|(order_id, event_ids)| PublishedTwice {
            order_id,
            event_ids: event_ids.into_iter().collect(),
        })
        .collect();
    published_twice.sort_by_key(|p| p.order_id);
    let (not_held, not_acknowledged) = match &acknowledged {
        Some(acknowledged) => (
            acknowledged
                .iter()
                .filter(|id| !held.contains(id))
                .copied()
                .collect(),
            orders
                .iter()
                .map(|o| o.id)
                .filter(|id| !acknowledged.contains(id))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let mut findings = Findings {
        orders: orders.len(),
        credits: credits.len(),
        reversals: reversals.len(),
        customers: balances.len(),
        acknowledged: acknowledged.map(|a| a.len()),
        orders_without_credit: missing,
        credits_with_wrong_points: wrong,
        credits_without_order: orphans,
        reversals_not_matching_credit: wrong_reversals,
        balances_not_matching_orders: wrong_balances,
        orders_published_more_than_once: published_twice,
        acknowledged_orders_not_held: not_held,
        orders_not_acknowledged: not_acknowledged,
        consistent: false,
        republished: None,
    };
    findings.consistent =
        findings.orders_without_credit.is_empty() && findings.consistent_but_missing_credits();
    findings
}
