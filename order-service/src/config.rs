use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_kit::duration;
use service_kit::limits::HttpSettings;

use crate::patterns::{Mode, OutboxRelay};

/// order-service: takes orders and turns each into exactly one `OrderPlaced`.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-service", version, about)]
pub struct Config {
    /// PostgreSQL database owned by order-service.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Port 0 picks a free port; the log says which.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8081")]
    pub listen_addr: SocketAddr,
    /// How a stored order becomes an event.
    #[arg(long, env = "ORDER_MODE", value_enum, default_value_t = Mode::Outbox)]
    pub mode: Mode,
    /// Prefix of stream and subject names, to share one NATS between deployments.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    pub events_prefix: String,
    /// JetStream's duplicate window for the order stream (only used when creating it).
    #[arg(long, env = "DUPLICATE_WINDOW", default_value = "2m", value_parser = duration::parse)]
    pub duplicate_window: Duration,
    /// How the outbox is relayed: `polling` (FOR UPDATE SKIP LOCKED, woken by
    /// LISTEN/NOTIFY) or `cdc` (logical replication of the outbox's inserts).
    #[arg(long, env = "OUTBOX_RELAY", value_enum, default_value_t = OutboxRelay::Polling)]
    pub outbox_relay: OutboxRelay,
    /// Most outbox rows one relay step publishes.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 200)]
    pub relay_batch_size: i64,
    /// How often the relay looks at the outbox when no notification woke it.
    #[arg(long, env = "RELAY_POLL_INTERVAL", default_value = "1s", value_parser = duration::parse)]
    pub relay_poll_interval: Duration,
    /// Self-read: how long `POST /orders` waits for the PubAck. A publish
    /// still unanswered then is sent again under the same message id and
    /// waited for as long once more; with no answer still, the outcome is
    /// unknown (504: retry with the same Idempotency-Key).
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "2s", value_parser = duration::parse)]
    pub publish_timeout: Duration,
    /// Self-read: how long JetStream waits for the projector's ack before redelivering.
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = duration::parse)]
    pub consumer_ack_wait: Duration,
    /// Self-read: deliveries of an event the projector keeps failing to
    /// apply before it is dead-lettered (not counting database outages).
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub consumer_max_deliver: i64,
    /// Largest order total accepted, in minor units of the order's currency;
    /// larger orders are refused with 422 `total_too_large`, before they can
    /// overflow anything downstream.
    #[arg(long, env = "MAX_ORDER_TOTAL_MINOR", default_value_t = 1_000_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_order_total_minor: i64,
    /// CDC: prefix of the replication slot names (`<prefix>_orders`,
    /// `<prefix>_outbox`); default: the database's name. Slots are per server,
    /// so two deployments on one PostgreSQL need different prefixes.
    #[arg(long, env = "CDC_SLOT")]
    pub cdc_slot: Option<String>,
    /// CDC: how often the reader writes a heartbeat to the WAL and checks its slot.
    #[arg(long, env = "CDC_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = duration::parse)]
    pub cdc_heartbeat_interval: Duration,
    /// CDC: committed transactions whose PubAcks may be awaited at once.
    #[arg(long, env = "CDC_MAX_IN_FLIGHT", default_value_t = 1000)]
    pub cdc_max_in_flight: usize,
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before it is
    /// answered 503 `database_unavailable` (pool exhausted or database down).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub db_acquire_timeout: Duration,
    /// Request timeout, concurrency cap and admin listener.
    #[command(flatten)]
    pub http: HttpSettings,
    /// How long to wait for the database and NATS at start-up.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "30s", value_parser = duration::parse)]
    pub startup_timeout: Duration,
}
