//! Every metric the services export, named here once: the `order_events_`
//! prefix, base units (seconds, bytes), `_total` on counters, and one label
//! set per name, whichever service or pattern records it. Process metrics
//! keep their standard `process_` names. `docs/observability.md` lists them
//! all; alert rules are in `docs/alerts.yml`.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Orders this instance placed (201/202 for a new order).
pub const ORDERS_PLACED: &str = "order_events_orders_placed_total";
pub const ORDER_LOOKUPS: &str = "order_events_order_lookups_total";
/// Publishes acknowledged by the stream, duplicates included, by `source`.
pub const PUBLISHED: &str = "order_events_published_total";
/// Of those, the ones the stream already had, by `source`.
pub const PUBLISH_DUPLICATES: &str = "order_events_publish_duplicates_total";
pub const LOST: &str = "order_events_lost_total";
pub const PUBLISH_BATCH_SIZE: &str = "order_events_publish_batch_size";
pub const RELAY_ERRORS: &str = "order_events_relay_errors_total";
pub const OUTBOX_PENDING: &str = "order_events_outbox_pending_rows";
pub const OUTBOX_OLDEST_AGE: &str = "order_events_outbox_oldest_age_seconds";
pub const CONSUMED: &str = "order_events_consumed_total";
pub const CONSUMER_BATCH_SIZE: &str = "order_events_consumer_batch_size";
pub const CONSUMER_BATCHES_SPLIT: &str = "order_events_consumer_batches_split_total";
pub const CONSUMER_PENDING: &str = "order_events_consumer_pending_messages";
pub const CONSUMER_ACK_PENDING: &str = "order_events_consumer_ack_pending_messages";
pub const DEAD_LETTERS: &str = "order_events_dead_letter_messages";
/// Cancellations the order history holds until their order's `OrderPlaced`.
pub const CANCELLATIONS_AWAITING_ORDER: &str = "order_events_cancellations_awaiting_order";
/// Cancellations recorded before their order's credit (rewards-service).
pub const REVERSALS_AWAITING_CREDIT: &str = "order_events_reversals_awaiting_credit";
pub const CDC_READER_ACTIVE: &str = "order_events_cdc_reader_active";
pub const CDC_SLOT_LAG: &str = "order_events_cdc_slot_lag_bytes";
pub const CDC_SLOT_RETAINED_WAL: &str = "order_events_cdc_slot_retained_wal_bytes";
pub const CDC_DEAD_LETTERED_ROWS: &str = "order_events_cdc_dead_lettered_rows_total";
pub const HTTP_REQUEST_DURATION: &str = "order_events_http_request_duration_seconds";
pub const HTTP_REQUESTS_SHED: &str = "order_events_http_requests_shed_total";
pub const HTTP_REQUESTS_TIMED_OUT: &str = "order_events_http_requests_timed_out_total";

/// Every name above, for the check that `docs/observability.md` lists each.
pub const ALL: &[&str] = &[
    ORDERS_PLACED,
    ORDER_LOOKUPS,
    PUBLISHED,
    PUBLISH_DUPLICATES,
    LOST,
    PUBLISH_BATCH_SIZE,
    RELAY_ERRORS,
    OUTBOX_PENDING,
    OUTBOX_OLDEST_AGE,
    CONSUMED,
    CONSUMER_BATCH_SIZE,
    CONSUMER_BATCHES_SPLIT,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    DEAD_LETTERS,
    CANCELLATIONS_AWAITING_ORDER,
    REVERSALS_AWAITING_CREDIT,
    CDC_READER_ACTIVE,
    CDC_SLOT_LAG,
    CDC_SLOT_RETAINED_WAL,
    CDC_DEAD_LETTERED_ROWS,
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS_SHED,
    HTTP_REQUESTS_TIMED_OUT,
];

/// Buckets of the batch-size histograms (events or messages per batch).
pub const BATCH_SIZE_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
/// Buckets of the request-duration histogram, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The HELP text of every metric.
pub fn describe() {
    describe_counter!(
        ORDERS_PLACED,
        "Orders placed by this instance (new orders only)."
    );
    describe_counter!(
        ORDER_LOOKUPS,
        "Database lookups of GET /orders/{id}: one per request, and one more each time a ?wait is woken."
    );
    describe_counter!(
        PUBLISHED,
        "Events the stream acknowledged, duplicates included, by source (the pattern or relay that published)."
    );
    describe_counter!(
        PUBLISH_DUPLICATES,
        "Acknowledged events the stream already had (a replay), by source."
    );
    describe_counter!(
        LOST,
        "Events lost after their order was committed (the dual-write control only), by source."
    );
    describe_histogram!(
        PUBLISH_BATCH_SIZE,
        Unit::Count,
        "Events per batch a relay or CDC reader published, by source."
    );
    describe_counter!(
        RELAY_ERRORS,
        "Outbox relay steps that failed and were rolled back."
    );
    describe_gauge!(
        OUTBOX_PENDING,
        Unit::Count,
        "Rows waiting in the outbox, read at each scrape."
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest row waiting in the outbox (0 when empty), read at each scrape."
    );
    describe_counter!(
        CONSUMED,
        "Messages a consumer finished with, by consumer and outcome (applied, duplicate, retried, dead_lettered)."
    );
    describe_histogram!(
        CONSUMER_BATCH_SIZE,
        Unit::Count,
        "Messages per batch a consumer took, by consumer."
    );
    describe_counter!(
        CONSUMER_BATCHES_SPLIT,
        "Consumer batches that failed and were applied again message by message, by consumer."
    );
    describe_gauge!(
        CONSUMER_PENDING,
        Unit::Count,
        "Messages in the stream not yet delivered to the durable consumer, read from the broker at each scrape."
    );
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        Unit::Count,
        "Messages delivered to the durable consumer and not yet acknowledged, read from the broker at each scrape."
    );
    describe_gauge!(
        DEAD_LETTERS,
        Unit::Count,
        "Messages in the dead-letter stream, read from the broker at each scrape."
    );
    describe_gauge!(
        CANCELLATIONS_AWAITING_ORDER,
        Unit::Count,
        "Cancellations the self-read order history applied before their order's OrderPlaced, held until it comes, read at each scrape."
    );
    describe_gauge!(
        REVERSALS_AWAITING_CREDIT,
        Unit::Count,
        "Cancellations that arrived before their order's credit and wait for it (applied with it when it comes), read from the database at each scrape."
    );
    describe_gauge!(
        CDC_READER_ACTIVE,
        "1 while this instance streams the slot, 0 while it stands by."
    );
    describe_gauge!(
        CDC_SLOT_LAG,
        Unit::Bytes,
        "WAL between the server's current position and what the slot confirmed."
    );
    describe_gauge!(
        CDC_SLOT_RETAINED_WAL,
        Unit::Bytes,
        "WAL the slot keeps the server from removing."
    );
    describe_counter!(
        CDC_DEAD_LETTERED_ROWS,
        "Captured rows that formed no event and were dead-lettered, by slot and table."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP requests by method, route and status."
    );
    describe_counter!(
        HTTP_REQUESTS_SHED,
        "Requests refused with 503 overloaded past MAX_CONCURRENT_REQUESTS."
    );
    describe_counter!(
        HTTP_REQUESTS_TIMED_OUT,
        "Requests abandoned with 504 past REQUEST_TIMEOUT."
    );
}

/// Counts PubAcks under `source`: every one (duplicates included, as it
/// happened), and the duplicates among them.
pub fn published(source: &'static str, new: u64, duplicates: u64) {
    counter!(PUBLISHED, "source" => source).increment(new + duplicates);
    counter!(PUBLISH_DUPLICATES, "source" => source).increment(duplicates);
}

/// Exports the loss counter of `source` at 0, before any loss.
pub fn lost_none_yet(source: &'static str) {
    counter!(LOST, "source" => source).increment(0);
}

/// An event lost for good after its order was committed.
pub fn lost(source: &'static str) {
    counter!(LOST, "source" => source).increment(1);
}

/// The size of a batch a relay or a reader publishes.
pub fn publish_batch(source: &'static str, events: usize) {
    histogram!(PUBLISH_BATCH_SIZE, "source" => source).record(events as f64);
}

/// A message a consumer is done with, and how.
pub fn consumed(consumer: &'static str, outcome: &'static str) {
    counter!(CONSUMED, "consumer" => consumer, "outcome" => outcome).increment(1);
}

/// The size of a batch a consumer takes.
pub fn consumer_batch(consumer: &'static str, messages: usize) {
    histogram!(CONSUMER_BATCH_SIZE, "consumer" => consumer).record(messages as f64);
}

pub fn consumer_batch_split(consumer: &'static str) {
    counter!(CONSUMER_BATCHES_SPLIT, "consumer" => consumer).increment(1);
}

/// What the broker says of a durable consumer.
pub fn consumer_backlog(consumer: &str, pending: u64, ack_pending: usize) {
    gauge!(CONSUMER_PENDING, "consumer" => consumer.to_owned()).set(pending as f64);
    gauge!(CONSUMER_ACK_PENDING, "consumer" => consumer.to_owned()).set(ack_pending as f64);
}

pub fn dead_letters(messages: u64) {
    gauge!(DEAD_LETTERS).set(messages as f64);
}

/// Cancellations waiting for their order's credit.
pub fn reversals_awaiting_credit(cancellations: i64) {
    gauge!(REVERSALS_AWAITING_CREDIT).set(cancellations as f64);
}

/// What waits in the outbox.
pub fn outbox_backlog(rows: i64, oldest: Duration) {
    gauge!(OUTBOX_PENDING).set(rows as f64);
    gauge!(OUTBOX_OLDEST_AGE).set(oldest.as_secs_f64());
}

/// Cancellations the order history holds until their order comes.
pub fn cancellations_awaiting_order(cancellations: i64) {
    gauge!(CANCELLATIONS_AWAITING_ORDER).set(cancellations as f64);
}

pub fn relay_error() {
    counter!(RELAY_ERRORS).increment(1);
}

pub fn order_placed() {
    counter!(ORDERS_PLACED).increment(1);
}

pub fn order_lookup() {
    counter!(ORDER_LOOKUPS).increment(1);
}

/// Whether this instance streams the slot `slot` (its label).
pub fn cdc_reader_active(slot: &'static str, active: bool) {
    gauge!(CDC_READER_ACTIVE, "slot" => slot).set(f64::from(u8::from(active)));
}

/// A slot's lag and the WAL it retains.
pub fn cdc_slot(slot: &'static str, lag_bytes: i64, retained_bytes: i64) {
    gauge!(CDC_SLOT_LAG, "slot" => slot).set(lag_bytes as f64);
    gauge!(CDC_SLOT_RETAINED_WAL, "slot" => slot).set(retained_bytes as f64);
}

pub fn cdc_dead_lettered_rows(slot: &'static str, table: &'static str, rows: u64) {
    counter!(CDC_DEAD_LETTERED_ROWS, "slot" => slot, "table" => table).increment(rows);
}

/// One HTTP request; every label comes from a fixed set.
pub fn http_request(method: &'static str, path: String, status: u16, took: Duration) {
    histogram!(
        HTTP_REQUEST_DURATION,
        "method" => method,
        "path" => path,
        "status" => status.to_string(),
    )
    .record(took.as_secs_f64());
}

pub fn http_request_shed() {
    counter!(HTTP_REQUESTS_SHED).increment(1);
}

pub fn http_request_timed_out() {
    counter!(HTTP_REQUESTS_TIMED_OUT).increment(1);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The metrics table of `docs/observability.md` names exactly the
    /// metrics defined here.
    #[test]
    fn the_observability_page_lists_every_metric_and_no_other() {
        let page = include_str!("../../docs/observability.md");
        let listed: BTreeSet<&str> = page
            .lines()
            .filter_map(|line| line.strip_prefix("| `order_events_"))
            .filter_map(|rest| rest.split_once('`'))
            .map(|(name, _)| name)
            .collect();
        let defined: BTreeSet<&str> = ALL
            .iter()
            .map(|name| name.strip_prefix("order_events_").unwrap())
            .collect();
        assert_eq!(listed, defined);
    }
}
