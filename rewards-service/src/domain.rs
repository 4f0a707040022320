//! The rewards rule and the checks an event must pass before it is
//! credited or reversed.

use chrono::{DateTime, Utc};
use shared_events::{Currency, Envelope, OrderCancelled, OrderPlaced};
use uuid::Uuid;

/// Reward points for an order: one point per whole unit of the order's
/// currency, rounded down (EUR 25.99 earns 25 points, JPY 1,500 earns 1,500).
pub fn points_for(total_minor: i64, currency: Currency) -> i64 {
    currency.whole_units(total_minor)
}

/// A credit to write: one per order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub points: i64,
    pub order_total_minor: i64,
    pub currency: Currency,
    pub order_placed_at: DateTime<Utc>,
}

/// Why an event cannot be credited, ever: it goes to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("empty customer_id")]
    NoCustomer,
    #[error("the order has no lines")]
    NoLines,
    #[error("a line has a quantity below 1 or a negative price")]
    InvalidLine,
    #[error("total_minor {stated} differs from the sum of the lines {computed:?}")]
    TotalMismatch { stated: i64, computed: Option<i64> },
    #[error("negative total_minor {0}")]
    NegativeTotal(i64),
}

impl Credit {
    /// Checks the event's content and computes its points.
    pub fn from_event(event: &Envelope<OrderPlaced>) -> Result<Self, InvalidEvent> {
        let order = &event.payload;
        let currency = Currency::from_code(&order.currency)
            .ok_or_else(|| InvalidEvent::UnknownCurrency(order.currency.clone()))?;
        if order.customer_id.is_empty() {
            return Err(InvalidEvent::NoCustomer);
        }
        if order.lines.is_empty() {
            return Err(InvalidEvent::NoLines);
        }
        if order
            .lines
            .iter()
            .any(|l| l.quantity < 1 || l.unit_price_minor < 0)
        {
            return Err(InvalidEvent::InvalidLine);
        }
        let computed = order.lines.iter().try_fold(0_i64, |sum, line| {
            line.quantity
                .checked_mul(line.unit_price_minor)
                .and_then(|amount| sum.checked_add(amount))
        });
        if computed != Some(order.total_minor) {
            return Err(InvalidEvent::TotalMismatch {
                stated: order.total_minor,
                computed,
            });
        }
        Ok(Self {
            event_id: event.event_id,
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            points: points_for(order.total_minor, currency),
            order_total_minor: order.total_minor,
            currency,
            order_placed_at: order.placed_at,
        })
    }
}

/// A cancellation to apply: it takes back the points its order's credit
/// gave, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    pub event_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    /// The points the cancelled order earned by the rule: what the
    /// reversal takes back, which its credit holds too when the two agree
    /// ([`Reversal::disagreement`]).
    pub points: i64,
    pub order_total_minor: i64,
    pub currency: Currency,
    pub cancelled_at: DateTime<Utc>,
}

impl Reversal {
    /// Checks the event's content and computes the points it takes back.
    pub fn from_event(event: &Envelope<OrderCancelled>) -> Result<Self, InvalidEvent> {
        let order = &event.payload;
        let currency = Currency::from_code(&order.currency)
            .ok_or_else(|| InvalidEvent::UnknownCurrency(order.currency.clone()))?;
        if order.customer_id.is_empty() {
            return Err(InvalidEvent::NoCustomer);
        }
        if order.total_minor < 0 {
            return Err(InvalidEvent::NegativeTotal(order.total_minor));
        }
        Ok(Self {
            event_id: event.event_id,
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            points: points_for(order.total_minor, currency),
            order_total_minor: order.total_minor,
            currency,
            cancelled_at: order.cancelled_at,
        })
    }

    /// How the cancelled order differs from the order as it was credited
    /// (`customer_id`, `order_total_minor`, `currency`), if it does: such a
    /// cancellation is not of that order and reverses nothing.
    pub fn disagreement(
        &self,
        customer_id: &str,
        order_total_minor: i64,
        currency: &str,
    ) -> Option<String> {
        let mut differences = Vec::new();
        if self.customer_id != customer_id {
            differences.push(format!(
                "customer {:?}, credited to {customer_id:?}",
                self.customer_id
            ));
        }
        if self.order_total_minor != order_total_minor || self.currency.code() != currency {
            differences.push(format!(
                "total {} {}, credited for {order_total_minor} {currency}",
                self.order_total_minor,
                self.currency.code()
            ));
        }
        (!differences.is_empty()).then(|| {
            format!(
                "the cancellation of order {} names {}",
                self.order_id,
                differences.join(" and ")
            )
        })
    }
}

/// What an event of an order's life asks of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Credit(Credit),
    Reversal(Reversal),
}

impl Change {
    pub fn order_id(&self) -> Uuid {
        match self {
            Change::Credit(credit) => credit.order_id,
            Change::Reversal(reversal) => reversal.order_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_events::OrderPlacedLine;

    fn currency(code: &str) -> Currency {
        Currency::from_code(code).unwrap()
    }

    #[test]
    fn one_point_per_whole_currency_unit_rounded_down() {
        assert_eq!(points_for(2599, currency("EUR")), 25);
        assert_eq!(points_for(99, currency("EUR")), 0);
        assert_eq!(points_for(0, currency("EUR")), 0);
        assert_eq!(points_for(1500, currency("JPY")), 1500);
        assert_eq!(points_for(12_345, currency("KWD")), 12);
    }

    fn event(lines: Vec<(i64, i64)>, total_minor: i64) -> Envelope<OrderPlaced> {
        let order_id = Uuid::now_v7();
        Envelope::new(
            Uuid::now_v7(),
            Utc::now(),
            OrderPlaced {
                order_id,
                customer_id: "alice".into(),
                currency: "EUR".into(),
                total_minor,
                lines: lines
                    .into_iter()
                    .map(|(quantity, unit_price_minor)| OrderPlacedLine {
                        sku: "SKU".into(),
                        quantity,
                        unit_price_minor,
                    })
                    .collect(),
                placed_at: Utc::now(),
            },
        )
    }

    #[test]
    fn a_consistent_event_becomes_a_credit() {
        let credit = Credit::from_event(&event(vec![(2, 1000), (1, 599)], 2599)).unwrap();
        assert_eq!(credit.points, 25);
    }

    #[test]
    fn an_inconsistent_event_is_refused() {
        assert_eq!(
            Credit::from_event(&event(vec![(2, 1000)], 2001)),
            Err(InvalidEvent::TotalMismatch {
                stated: 2001,
                computed: Some(2000)
            })
        );
        assert_eq!(
            Credit::from_event(&event(vec![], 0)),
            Err(InvalidEvent::NoLines)
        );
        assert_eq!(
            Credit::from_event(&event(vec![(0, 10)], 0)),
            Err(InvalidEvent::InvalidLine)
        );
    }

    fn cancellation(customer: &str, currency: &str, total_minor: i64) -> Envelope<OrderCancelled> {
        let order_id = Uuid::now_v7();
        Envelope::new(
            shared_events::cancelled_event_id(order_id),
            Utc::now(),
            OrderCancelled {
                order_id,
                customer_id: customer.into(),
                currency: currency.into(),
                total_minor,
                cancelled_at: Utc::now(),
                reason: None,
            },
        )
    }

    #[test]
    fn a_consistent_cancellation_claims_the_points_of_its_total() {
        let reversal = Reversal::from_event(&cancellation("alice", "EUR", 2599)).unwrap();
        assert_eq!(reversal.points, 25);
        assert_eq!(reversal.disagreement("alice", 2599, "EUR"), None);
    }

    #[test]
    fn an_inconsistent_cancellation_is_refused() {
        assert_eq!(
            Reversal::from_event(&cancellation("alice", "XXX", 100)),
            Err(InvalidEvent::UnknownCurrency("XXX".into()))
        );
        assert_eq!(
            Reversal::from_event(&cancellation("", "EUR", 100)),
            Err(InvalidEvent::NoCustomer)
        );
        assert_eq!(
            Reversal::from_event(&cancellation("alice", "EUR", -1)),
            Err(InvalidEvent::NegativeTotal(-1))
        );
    }

    #[test]
    fn a_cancellation_of_another_customer_or_total_disagrees_with_the_credit() {
        let reversal = Reversal::from_event(&cancellation("alice", "EUR", 2599)).unwrap();
        let other_customer = reversal.disagreement("bob", 2599, "EUR").unwrap();
        assert!(
            other_customer.contains(r#"customer "alice", credited to "bob""#),
            "{other_customer}"
        );
        let other_total = reversal.disagreement("alice", 2600, "EUR").unwrap();
        assert!(
            other_total.contains("total 2599 EUR, credited for 2600 EUR"),
            "{other_total}"
        );
        assert!(reversal.disagreement("alice", 2599, "USD").is_some());
    }
}
