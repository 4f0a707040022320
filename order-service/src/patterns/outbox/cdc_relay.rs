//! The outbox relayed by change data capture (`--outbox-relay cdc`): the
//! write path inserts the outbox row and deletes it in the same transaction —
//! the WAL keeps the insert, so the table never grows — and the CDC reader
//! publishes each captured insert, confirming the slot after the PubAcks.

use crate::replication::pgoutput::Relation;
use crate::replication::{Capture, Outgoing, Shapes};

const KNOWN: &[(&str, &[&str])] = &[(
    "outbox",
    &[
        "seq",
        "event_id",
        "subject",
        "payload",
        "created_at",
        "traceparent",
    ],
)];

/// Each inserted outbox row is one event, published as stored.
#[derive(Default)]
pub struct OutboxCapture {
    shapes: Shapes,
    events: Vec<Outgoing>,
}

impl Capture for OutboxCapture {
    fn tables(&self) -> &'static [&'static str] {
        &["outbox"]
    }

    fn relation(&mut self, relation: &Relation) -> anyhow::Result<()> {
        self.shapes.learn(relation, KNOWN)
    }

    fn insert(&mut self, relation_id: u32, values: Vec<Option<String>>) -> anyhow::Result<()> {
        let (_, row) = self.shapes.row(relation_id, &values)?;
        self.events.push(Outgoing {
            subject: row.text("subject")?.to_owned(),
            event_id: row.get("event_id")?,
            payload: row.text("payload")?.as_bytes().to_vec(),
            traceparent: row.optional_text("traceparent")?.map(str::to_owned),
        });
        Ok(())
    }

    /// Each row carries its own trace context; the transaction's is not used.
    fn commit(&mut self, _traceparent: Option<String>) -> anyhow::Result<Vec<Outgoing>> {
        Ok(std::mem::take(&mut self.events))
    }

    fn reset(&mut self) {
        self.events.clear();
    }
}
