//! What became of the clients' orders, counted against truths the system
//! under test did not write: the answers the clients received (which order
//! id for which key, for what they asked), and the points that asking earns
//! by the rewards rule. A pure function, so that each check is shown to fail.

use std::collections::{BTreeMap, HashMap, HashSet};

use rewards_service::domain::points_for;
use serde::Serialize;
use shared_events::Currency;
use uuid::Uuid;

use crate::clients::{Answer, Asked};

/// What the run read once the system converged.
pub struct Observed<'a> {
    /// Every success answer the clients received.
    pub answers: &'a [Answer],
    /// Orders order-service holds: id, and what the order holds.
    pub held: &'a HashMap<Uuid, Asked>,
    /// The ledger's credits: order id, customer, points.
    pub ledger: &'a [(Uuid, String, i64)],
    /// Orders whose credit the ledger reversed (cancelled orders).
    pub reversed: &'a HashSet<Uuid>,
    /// Balances by customer.
    pub balances: &'a BTreeMap<String, i64>,
}

/// What became of the acknowledged orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub credited_once: usize,
    /// Acknowledged, and never credited.
    pub lost: usize,
    /// Requests (keys) whose answers named more than one order: a retry
    /// placed as a second order.
    pub doubled: usize,
    /// Orders held or credited that no answer named: a second order for a
    /// request whose first answer was lost, or a credit for an order that
    /// does not exist. With the credited ones, the ledger holds exactly the
    /// acknowledged orders when this and `lost` are 0.
    pub unacknowledged: usize,
    /// Customers whose balance is not the points of their acknowledged,
    /// credited orders (less those of the reversed ones), computed from what
    /// the clients asked for: a credit counted twice in a balance, or one
    /// for an order nobody placed.
    pub wrong_balances: usize,
    /// Credits whose points are not those of the order as order-service
    /// stores it (or of an order it does not hold).
    pub wrong_points: usize,
    /// Acknowledged orders order-service does not hold (self-read: missing
    /// from the order history).
    pub not_in_history: usize,
}

impl Tally {
    /// `n` orders, each credited once, nothing else.
    pub fn exact(n: usize) -> Self {
        Self {
            credited_once: n,
            lost: 0,
            doubled: 0,
            unacknowledged: 0,
            wrong_balances: 0,
            wrong_points: 0,
            not_in_history: 0,
        }
    }
}

fn points(asked: &Asked) -> Option<i64> {
    Currency::from_code(&asked.currency).map(|c| points_for(asked.total_minor, c))
}

pub fn verdict(seen: &Observed<'_>) -> Tally {
    let mut per_key: HashMap<&str, HashSet<Uuid>> = HashMap::new();
    let mut acknowledged: HashMap<Uuid, &Asked> = HashMap::new();
    for answer in seen.answers {
        per_key
            .entry(&answer.key)
            .or_default()
            .insert(answer.order_id);
        acknowledged.insert(answer.order_id, &answer.asked);
    }
    let credited: HashSet<Uuid> = seen.ledger.iter().map(|(id, _, _)| *id).collect();
    let credited_once = acknowledged
        .keys()
        .filter(|id| credited.contains(id))
        .count();
    let unacknowledged: HashSet<Uuid> = seen
        .held
        .keys()
        .chain(credited.iter())
        .filter(|id| !acknowledged.contains_key(id))
        .copied()
        .collect();
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, asked) in &acknowledged {
        if credited.contains(id) && !seen.reversed.contains(id) {
            *expected.entry(&asked.customer_id).or_default() += points(asked).unwrap_or(0);
        }
    }
    let customers: HashSet<&str> = expected
        .keys()
        .copied()
        .chain(seen.balances.keys().map(String::as_str))
        .collect();
    let wrong_balances = customers
        .into_iter()
        .filter(|c| {
            seen.balances.get(*c).copied().unwrap_or(0) != expected.get(c).copied().unwrap_or(0)
        })
        .count();
    let wrong_points = seen
        .ledger
        .iter()
        .filter(|(id, _, credited)| seen.held.get(id).and_then(points) != Some(*credited))
        .count();
    Tally {
        credited_once,
        lost: acknowledged.len() - credited_once,
        doubled: per_key.values().filter(|ids| ids.len() > 1).count(),
        unacknowledged: unacknowledged.len(),
        wrong_balances,
        wrong_points,
        not_in_history: acknowledged
            .keys()
            .filter(|id| !seen.held.contains_key(id))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(customer: &str, total_minor: i64) -> Asked {
        Asked {
            customer_id: customer.into(),
            total_minor,
            currency: "EUR".into(),
        }
    }

    /// Three requests, each answered once (the first twice, with one id),
    /// each held and credited once: the world as it should be.
    struct World {
        answers: Vec<Answer>,
        held: HashMap<Uuid, Asked>,
        ledger: Vec<(Uuid, String, i64)>,
        reversed: HashSet<Uuid>,
        balances: BTreeMap<String, i64>,
    }

    impl World {
        fn sound() -> Self {
            let mut world = Self {
                answers: Vec::new(),
                held: HashMap::new(),
                ledger: Vec::new(),
                reversed: HashSet::new(),
                balances: BTreeMap::new(),
            };
            for (i, (customer, total)) in [("al", 2599), ("al", 1000), ("bo", 500)]
                .into_iter()
                .enumerate()
            {
                let id = Uuid::now_v7();
                world.place(&format!("k-{i}"), asked(customer, total), id);
            }
            let first = world.answers[0].clone();
            world.answers.push(first);
            world
        }

        /// An order placed, answered, held and credited.
        fn place(&mut self, key: &str, asked: Asked, id: Uuid) {
            let points = points(&asked).unwrap();
            *self.balances.entry(asked.customer_id.clone()).or_default() += points;
            self.ledger.push((id, asked.customer_id.clone(), points));
            self.held.insert(id, asked.clone());
            self.answers.push(Answer {
                key: key.into(),
                asked,
                order_id: id,
            });
        }

        fn tally(&self) -> Tally {
            verdict(&Observed {
                answers: &self.answers,
                held: &self.held,
                ledger: &self.ledger,
                reversed: &self.reversed,
                balances: &self.balances,
            })
        }
    }

    #[test]
    fn the_world_as_it_should_be_is_exact() {
        assert_eq!(World::sound().tally(), Tally::exact(3));
    }

    #[test]
    fn a_retry_answered_with_a_second_order_is_doubled() {
        let mut world = World::sound();
        // The retry of k-0 was placed anew, credited, and named to the client.
        world.place("k-0", asked("al", 2599), Uuid::now_v7());
        let tally = world.tally();
        assert_eq!(tally.doubled, 1);
        // Every credit matches its order and every balance its acknowledged
        // orders: only the answers per key show it.
        assert_eq!(
            (
                tally.credited_once,
                tally.wrong_balances,
                tally.unacknowledged
            ),
            (4, 0, 0)
        );
    }

    #[test]
    fn a_second_order_no_client_was_told_of_is_unacknowledged() {
        let mut world = World::sound();
        // The first attempt's order, stored and credited; its answer was lost
        // and the retry placed another.
        world.place("k-0", asked("al", 2599), Uuid::now_v7());
        world.answers.pop();
        let tally = world.tally();
        assert_eq!(
            (tally.unacknowledged, tally.wrong_balances, tally.doubled),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_credit_for_an_order_that_does_not_exist_is_found() {
        let mut world = World::sound();
        let ghost = Uuid::now_v7();
        world.ledger.push((ghost, "bo".into(), 5));
        *world.balances.get_mut("bo").unwrap() += 5;
        let tally = world.tally();
        assert_eq!(
            (
                tally.unacknowledged,
                tally.wrong_balances,
                tally.wrong_points
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_credit_counted_twice_in_a_balance_is_found() {
        let mut world = World::sound();
        *world.balances.get_mut("al").unwrap() += 25;
        assert_eq!(world.tally().wrong_balances, 1);
    }

    #[test]
    fn a_reversed_credit_is_taken_off_the_balance_it_is_expected_in() {
        let mut world = World::sound();
        let (id, customer, points) = world.ledger[2].clone();
        world.reversed.insert(id);
        assert_eq!(world.tally().wrong_balances, 1);
        *world.balances.get_mut(&customer).unwrap() -= points;
        assert_eq!(world.tally(), Tally::exact(3));
    }

    #[test]
    fn a_lost_credit_is_lost() {
        let mut world = World::sound();
        let (id, customer, points) = world.ledger.remove(2);
        *world.balances.get_mut(&customer).unwrap() -= points;
        assert_eq!(world.tally().lost, 1);
        assert_eq!(world.tally().wrong_balances, 0);
        world.held.remove(&id);
        assert_eq!(world.tally().not_in_history, 1);
    }
}
