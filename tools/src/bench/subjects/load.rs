//! Placing the orders: one `OrderPlaced` envelope per order, the size the
//! services publish, sent the way the outbox relay sends them (the services'
//! own [`Publisher::send_batch`], one batch awaited at a time, atomic where
//! the stream takes atomic batches), each event under its layout's subject.

use std::time::Instant;

use anyhow::Context as _;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use shared_events::jetstream::{Outgoing, Publisher};
use shared_events::{Envelope, OrderPlaced, OrderPlacedLine};
use uuid::Uuid;

use super::layout::{Layout, Subjects};

/// What placing the orders left behind.
pub(super) struct Placed {
    /// The orders, in the order they were published.
    pub order_ids: Vec<Uuid>,
    /// The stream sequence each order's `OrderPlaced` was stored at.
    pub sequences: Vec<u64>,
    /// Events stored and acknowledged per second, first send to last PubAck.
    pub per_sec: f64,
    /// Mean size of an event's payload, in bytes.
    pub payload_bytes: f64,
}

/// Publishes an `OrderPlaced` for each of `orders` fresh orders under
/// `layout`, `batch` events at a time, showing progress as `label`. The
/// next batch is built while the previous one awaits its PubAcks, as the
/// relay builds its rows into events before sending; a PubAck missing or a
/// duplicate fails the run, since every event is new.
pub(super) async fn place(
    publisher: &Publisher,
    subjects: &Subjects,
    layout: Layout,
    orders: usize,
    batch: usize,
    label: &str,
) -> anyhow::Result<Placed> {
    let order_ids: Vec<Uuid> = (0..orders).map(|_| Uuid::now_v7()).collect();
    let events = |from: usize| -> Vec<Outgoing> {
        order_ids[from..orders.min(from + batch)]
            .iter()
            .enumerate()
            .map(|(i, id)| placed_event(subjects.placed(layout, *id), *id, from + i))
            .collect()
    };
    let bar = bar(orders as u64, &format!("{label}: placed"));
    let mut sequences = Vec::with_capacity(orders);
    let mut payload_bytes = 0usize;
    let started = Instant::now();
    let mut next = events(0);
    let mut from = 0;
    while !next.is_empty() {
        payload_bytes += next.iter().map(|e| e.payload.len()).sum::<usize>();
        let count = next.len();
        let pending = publisher.send_batch(next).await?;
        from += count;
        next = events(from);
        for answer in pending.each().await {
            let published = answer.context("placing an order")?;
            anyhow::ensure!(
                !published.duplicate,
                "event {} was taken for a duplicate",
                published.event_id
            );
            sequences.push(published.stream_sequence);
        }
        bar.inc(count as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(Placed {
        order_ids,
        sequences,
        per_sec: orders as f64 / secs,
        payload_bytes: payload_bytes as f64 / orders.max(1) as f64,
    })
}

/// The `OrderPlaced` of order `id`, the `n`th of the run: one line, as the
/// benchmark's clients place them, in a fresh envelope.
pub(super) fn placed_event(subject: String, id: Uuid, n: usize) -> Outgoing {
    let lines = vec![OrderPlacedLine {
        sku: format!("SKU-{}", n % 1_000),
        quantity: 1,
        unit_price_minor: 100 + (n % 7) as i64 * 100,
    }];
    let placed_at = Utc::now();
    let event = OrderPlaced {
        order_id: id,
        customer_id: format!("customer-{:06}", n % 100_000),
        currency: "EUR".to_owned(),
        total_minor: lines.iter().map(|l| l.quantity * l.unit_price_minor).sum(),
        lines,
        placed_at,
    };
    let envelope = Envelope::new(Uuid::now_v7(), placed_at, event);
    Outgoing {
        subject,
        event_id: envelope.event_id,
        payload: envelope.to_bytes(),
        traceparent: None,
    }
}

/// A progress bar of `total` events, named `label`.
pub(super) fn bar(total: u64, label: &str) -> ProgressBar {
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(&format!(
            "[bench {label}] [{{bar:30}}] {{pos}}/{{len}} {{per_sec}}, {{eta}} left"
        ))
        .expect("a valid template")
        .progress_chars("#-"),
    )
}
