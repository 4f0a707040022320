//! Rows of `orders` and `order_lines` to `OrderPlaced` v1.
//!
//! An order and its lines are written in one transaction, so a transaction's
//! rows form whole events. Rows that do not — lines whose order is not in the
//! same transaction, an order without lines (a publication that lacks
//! `order_lines` streams exactly that) — are rejected: dead-lettered and
//! counted by the reader, never published half or dropped silently.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared_events::Envelope;
use uuid::Uuid;

use crate::domain::OrderLine;
use crate::replication::pgoutput::Relation;
use crate::replication::{Capture, Outgoing, Rejected, Shapes};
use shared_events::OrderPlaced;
use shared_events::placed_event_id as event_id;

/// The columns of `orders` an `OrderPlaced` is made of.
const PLACED_COLUMNS: [&str; 5] = ["id", "customer_id", "currency", "total_minor", "created_at"];

/// The shapes this mapping (OrderPlaced v1) knows. An inserted order is a
/// placement whatever its status, so the status columns are known and not
/// read (only the self-read projector, which nothing captures, inserts an
/// order already cancelled). WAL written before they were added, which a
/// slot may still hold when order-service is upgraded, comes with the shape
/// from before, and forms the same events.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "orders",
        &[
            PLACED_COLUMNS[0],
            PLACED_COLUMNS[1],
            PLACED_COLUMNS[2],
            PLACED_COLUMNS[3],
            PLACED_COLUMNS[4],
            "status",
            "cancelled_at",
            "cancel_reason",
        ],
    ),
    (
        "order_lines",
        &["order_id", "line_no", "sku", "quantity", "unit_price_minor"],
    ),
    // Before migration 20261203000003 (the order's status).
    ("orders", &PLACED_COLUMNS),
];

/// Collects a transaction's orders and lines; one event per order at commit.
/// What was stored is published as it is: the row is the truth, and the
/// consumers check the event (a row only SQL could write is theirs to refuse,
/// not a reason to stop capturing).
pub struct OrdersCapture {
    subject: String,
    shapes: Shapes,
    orders: Vec<OrderPlaced>,
    lines: HashMap<Uuid, Vec<(i32, OrderLine)>>,
    rejected: Option<Rejected>,
}

impl OrdersCapture {
    pub fn new(subject: String) -> Self {
        Self {
            subject,
            shapes: Shapes::default(),
            orders: Vec::new(),
            lines: HashMap::new(),
            rejected: None,
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
            "orders" => self.orders.push(OrderPlaced {
                order_id: row.get("id")?,
                customer_id: row.text("customer_id")?.to_owned(),
                currency: row.text("currency")?.to_owned(),
                total_minor: row.get("total_minor")?,
                lines: Vec::new(),
                placed_at: timestamp(row.text("created_at")?)?,
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

    fn commit(&mut self, traceparent: Option<String>) -> anyhow::Result<Vec<Outgoing>> {
        let mut lines = std::mem::take(&mut self.lines);
        let mut events = Vec::new();
        let mut without_lines = Vec::new();
        for mut order in std::mem::take(&mut self.orders) {
            let mut numbered = lines.remove(&order.order_id).unwrap_or_default();
            if numbered.is_empty() {
                without_lines.push(order);
                continue;
            }
            numbered.sort_by_key(|(line_no, _)| *line_no);
            order.lines = numbered.into_iter().map(|(_, line)| line).collect();
            let mut event = Envelope::new(event_id(order.order_id), order.placed_at, order);
            event.traceparent.clone_from(&traceparent);
            events.push(Outgoing {
                subject: self.subject.clone(),
                event_id: event.event_id,
                payload: event.to_bytes(),
                traceparent: event.traceparent.clone(),
            });
        }
        self.rejected = reject(without_lines, lines);
        Ok(events)
    }

    fn rejected(&mut self) -> Option<Rejected> {
        self.rejected.take()
    }

    fn reset(&mut self) {
        self.orders.clear();
        self.lines.clear();
        self.rejected = None;
    }
}

/// The rows of a transaction that formed no event, if any.
fn reject(
    without_lines: Vec<OrderPlaced>,
    orphans: HashMap<Uuid, Vec<(i32, OrderLine)>>,
) -> Option<Rejected> {
    if without_lines.is_empty() && orphans.is_empty() {
        return None;
    }
    let mut reasons = Vec::new();
    let mut rows = Vec::new();
    if !without_lines.is_empty() {
        reasons.push(format!(
            "{} order(s) without lines in their transaction (does the publication include order_lines?)",
            without_lines.len()
        ));
        rows.push(("orders", without_lines.len() as u64));
    }
    let orphan_lines: Vec<_> = orphans
        .into_iter()
        .flat_map(|(order_id, lines)| {
            lines.into_iter().map(move |(line_no, line)| {
                json!({
                    "order_id": order_id, "line_no": line_no, "sku": line.sku,
                    "quantity": line.quantity, "unit_price_minor": line.unit_price_minor,
                })
            })
        })
        .collect();
    if !orphan_lines.is_empty() {
        reasons.push(format!(
            "{} order line(s) without their order in the same transaction",
            orphan_lines.len()
        ));
        rows.push(("order_lines", orphan_lines.len() as u64));
    }
    let payload = json!({
        "orders_without_lines": without_lines,
        "lines_without_order": orphan_lines,
    });
    Some(Rejected {
        reason: reasons.join("; "),
        payload: payload.to_string().into_bytes(),
        rows,
    })
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

    /// An `orders` row of the current shape: placed, not cancelled.
    fn order_row(
        id: Uuid,
        customer: &str,
        total_minor: &str,
        created_at: &str,
    ) -> Vec<Option<String>> {
        let mut row = text(&[
            &id.to_string(),
            customer,
            "EUR",
            total_minor,
            created_at,
            "placed",
        ]);
        row.extend([None, None]);
        row
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
                order_row(id, "alice", "2599", "2026-11-27 05:13:41.442834+00"),
            )
            .unwrap();
        capture
            .insert(2, text(&[&id.to_string(), "2", "B", "1", "99"]))
            .unwrap();
        capture
            .insert(2, text(&[&id.to_string(), "1", "A", "2", "1250"]))
            .unwrap();

        let events = capture.commit(None).unwrap();
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
        assert!(capture.commit(None).unwrap().is_empty());
        assert_eq!(capture.rejected(), None);
    }

    #[test]
    fn lines_without_their_order_and_an_order_without_lines_are_rejected() {
        let mut capture = OrdersCapture::new("orders.placed".into());
        capture
            .relation(&relation(1, "orders", KNOWN[0].1))
            .unwrap();
        capture
            .relation(&relation(2, "order_lines", KNOWN[1].1))
            .unwrap();
        let (lonely_order, elsewhere) = (Uuid::now_v7(), Uuid::now_v7());
        capture
            .insert(
                1,
                order_row(lonely_order, "bo", "100", "2026-11-27 05:13:41+00"),
            )
            .unwrap();
        for line_no in ["1", "2"] {
            capture
                .insert(2, text(&[&elsewhere.to_string(), line_no, "A", "1", "50"]))
                .unwrap();
        }

        assert!(capture.commit(None).unwrap().is_empty());
        let rejected = capture.rejected().expect("rejected rows");
        assert_eq!(rejected.rows, [("orders", 1), ("order_lines", 2)]);
        let payload: serde_json::Value = serde_json::from_slice(&rejected.payload).unwrap();
        assert_eq!(
            payload["orders_without_lines"][0]["order_id"],
            lonely_order.to_string()
        );
        assert_eq!(payload["lines_without_order"].as_array().unwrap().len(), 2);
        assert_eq!(capture.rejected(), None);
    }

    #[test]
    fn a_changed_table_shape_stops_capture() {
        let mut capture = OrdersCapture::new("orders.placed".into());
        let mut columns = KNOWN[0].1.to_vec();
        columns.push("discount_minor");
        assert!(capture.relation(&relation(1, "orders", &columns)).is_err());
        let mut columns = PLACED_COLUMNS.to_vec();
        columns.push("status");
        assert!(capture.relation(&relation(1, "orders", &columns)).is_err());
    }

    /// WAL a slot held from before the order's status was added forms the
    /// same event as an order inserted since.
    #[test]
    fn an_order_from_before_the_status_columns_is_captured_alike() {
        let id = Uuid::now_v7();
        let created_at = "2026-11-27 05:13:41.442834+00";
        let mut events = Vec::new();
        for (columns, row) in [
            (
                &PLACED_COLUMNS[..],
                text(&[&id.to_string(), "alice", "EUR", "99", created_at]),
            ),
            (KNOWN[0].1, order_row(id, "alice", "99", created_at)),
        ] {
            let mut capture = OrdersCapture::new("orders.placed".into());
            capture.relation(&relation(1, "orders", columns)).unwrap();
            capture
                .relation(&relation(2, "order_lines", KNOWN[1].1))
                .unwrap();
            capture.insert(1, row).unwrap();
            capture
                .insert(2, text(&[&id.to_string(), "1", "A", "1", "99"]))
                .unwrap();
            let mut committed = capture.commit(None).unwrap();
            assert_eq!(committed.len(), 1);
            events.push(committed.remove(0).payload);
        }
        assert_eq!(events[0], events[1]);
    }

    /// What pgoutput really sends for an order that is inserted, then
    /// updated (cancelled), through the publication as order-service makes
    /// it (inserts only) and as an operator may widen it (updates too),
    /// fed to the capture as the reader feeds it: one event per order, and
    /// an UPDATE is skipped, neither an error nor an event.
    #[sqlx::test]
    async fn an_update_of_an_order_is_skipped_and_stops_nothing(
        pool: sqlx::PgPool,
    ) -> anyhow::Result<()> {
        const PUBLICATION: &str = "order_events_orders";
        crate::replication::publication::ensure(&pool, PUBLICATION, &["orders", "order_lines"])
            .await?;
        let slot = format!("capture_test_{}", Uuid::new_v4().simple());
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&slot)
            .execute(&pool)
            .await?;
        let written: sqlx::Result<(Vec<Uuid>, Vec<Vec<u8>>)> = async {
            let mut ids = Vec::new();
            for widen in [false, true] {
                if widen {
                    sqlx::raw_sql(&format!(
                        "ALTER PUBLICATION {PUBLICATION} SET (publish = 'insert, update, delete')"
                    ))
                    .execute(&pool)
                    .await?;
                }
                let id = Uuid::now_v7();
                sqlx::raw_sql(&format!(
                    "BEGIN;
                     INSERT INTO orders (id, customer_id, currency, total_minor) VALUES ('{id}', 'ivy', 'EUR', 250);
                     INSERT INTO order_lines VALUES ('{id}', 1, 'SKU-1', 1, 250);
                     COMMIT;
                     UPDATE orders SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'no'
                     WHERE id = '{id}';"
                ))
                .execute(&pool)
                .await?;
                ids.push(id);
            }
            let changes: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $2)",
            )
            .bind(&slot)
            .bind(PUBLICATION)
            .fetch_all(&pool)
            .await?;
            Ok((ids, changes))
        }
        .await;
        // Dropped before anything can fail: the test database cannot be
        // dropped while a slot is on it.
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&slot)
            .execute(&pool)
            .await?;
        let (ids, changes) = written?;

        let mut capture = OrdersCapture::new("orders.placed".into());
        let (mut events, mut updates) = (Vec::new(), 0);
        for data in &changes {
            match data.first() {
                // Begin and Commit are framed by the replication client.
                Some(b'B') => {}
                Some(b'C') => events.extend(capture.commit(None)?),
                Some(kind) => {
                    updates += usize::from(*kind == b'U');
                    crate::replication::reader::change(&mut capture, data)?;
                }
                None => anyhow::bail!("an empty change"),
            }
        }
        assert_eq!(updates, 1, "only the widened publication sends an update");
        let placed: Vec<Uuid> = events
            .iter()
            .map(|e| Envelope::<OrderPlaced>::decode(&e.payload).map(|e| e.payload.order_id))
            .collect::<Result<_, _>>()?;
        assert_eq!(placed, ids);
        assert_eq!(capture.rejected(), None);
        Ok(())
    }
}
