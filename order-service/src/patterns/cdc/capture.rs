//! Rows of `orders` and `order_lines` to `OrderPlaced` v1.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared_events::Envelope;
use uuid::Uuid;

use crate::cdc::pgoutput::Relation;
use crate::cdc::{Capture, Outgoing, Shapes};
use crate::domain::{Order, OrderLine};
use shared_events::placed_event_id as event_id;

/// The columns this mapping (OrderPlaced v1) knows.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "orders",
        &["id", "customer_id", "currency", "total_minor", "created_at"],
    ),
    (
        "order_lines",
        &["order_id", "line_no", "sku", "quantity", "unit_price_minor"],
    ),
];

/// Collects a transaction's orders and lines; one event per order at commit.
pub struct OrdersCapture {
    subject: String,
    shapes: Shapes,
    orders: Vec<Order>,
    lines: HashMap<Uuid, Vec<(i32, OrderLine)>>,
}

impl OrdersCapture {
    pub fn new(subject: String) -> Self {
        Self {
            subject,
            shapes: Shapes::default(),
            orders: Vec::new(),
            lines: HashMap::new(),
        }
    }
}

/// `timestamptz` as the session prints it (ISO, UTC).
fn timestamp(text: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .map_err(|e| anyhow::anyhow!("timestamp {text:?}: {e}"))?
        .with_timezone(&Utc))
}

impl Capture for OrdersCapture {
    fn tables(&self) -> &'static [&'static str] {
        &["orders", "order_lines"]
    }

    fn relation(&mut self, relation: &Relation) -> anyhow::Result<()> {
        self.shapes.learn(relation, KNOWN)
    }

    fn insert(&mut self, relation_id: u32, values: Vec<Option<String>>) -> anyhow::Result<()> {
        let (table, row) = self.shapes.row(relation_id, &values)?;
        match table {
            "orders" => self.orders.push(Order {
                id: row.get("id")?,
                customer_id: row.text("customer_id")?.to_owned(),
                currency: row.text("currency")?.to_owned(),
                total_minor: row.get("total_minor")?,
                lines: Vec::new(),
                created_at: timestamp(row.text("created_at")?)?,
            }),
            "order_lines" => self.lines.entry(row.get("order_id")?).or_default().push((
                row.get("line_no")?,
                OrderLine {
                    sku: row.text("sku")?.to_owned(),
                    quantity: row.get("quantity")?,
                    unit_price_minor: row.get("unit_price_minor")?,
                },
            )),
            _ => {}
        }
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<Vec<Outgoing>> {
        let mut lines = std::mem::take(&mut self.lines);
        std::mem::take(&mut self.orders)
            .into_iter()
            .map(|mut order| {
                let mut numbered = lines.remove(&order.id).unwrap_or_default();
                numbered.sort_by_key(|(line_no, _)| *line_no);
                order.lines = numbered.into_iter().map(|(_, line)| line).collect();
                let event =
                    Envelope::new(event_id(order.id), order.created_at, order.placed_event());
                Ok(Outgoing {
                    subject: self.subject.clone(),
                    event_id: event.event_id,
                    payload: event.to_bytes(),
                })
            })
            .collect()
    }

    fn reset(&mut self) {
        self.orders.clear();
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(id: u32, name: &str, columns: &[&str]) -> Relation {
        Relation {
            id,
            namespace: "public".into(),
            name: name.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn text(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    #[test]
    fn a_transaction_with_an_order_and_its_lines_becomes_one_event() {
        let mut capture = OrdersCapture::new("orders.placed".into());
        capture
            .relation(&relation(1, "orders", KNOWN[0].1))
            .unwrap();
        capture
            .relation(&relation(2, "order_lines", KNOWN[1].1))
            .unwrap();
        let id = Uuid::now_v7();
        capture
            .insert(
                1,
                text(&[
                    &id.to_string(),
                    "alice",
                    "EUR",
                    "2599",
                    "2026-11-27 05:13:41.442834+00",
                ]),
            )
            .unwrap();
        capture
            .insert(2, text(&[&id.to_string(), "2", "B", "1", "99"]))
            .unwrap();
        capture
            .insert(2, text(&[&id.to_string(), "1", "A", "2", "1250"]))
            .unwrap();

        let events = capture.commit().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id, event_id(id));
        let event: Envelope<shared_events::OrderPlaced> =
            Envelope::decode(&events[0].payload).unwrap();
        assert_eq!(event.payload.total_minor, 2599);
        let skus: Vec<_> = event.payload.lines.iter().map(|l| l.sku.as_str()).collect();
        assert_eq!(skus, ["A", "B"]);
        assert_eq!(
            event.payload.placed_at.to_rfc3339(),
            "2026-11-27T05:13:41.442834+00:00"
        );
        assert!(capture.commit().unwrap().is_empty());
    }

    #[test]
    fn a_changed_table_shape_stops_capture() {
        let mut capture = OrdersCapture::new("orders.placed".into());
        let mut columns = KNOWN[0].1.to_vec();
        columns.push("discount_minor");
        assert!(capture.relation(&relation(1, "orders", &columns)).is_err());
    }
}
