//! The settings every service takes: where its database and NATS are, how
//! its streams are made, how long it waits for them at start-up, and its
//! HTTP limits.

use std::time::Duration;

use crate::limits::HttpSettings;

/// The settings every service of the workspace takes (flattened into each
/// service's `Config`, beside what is its own).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// PostgreSQL database owned by the service.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// NATS server, or a comma-separated list of a cluster's servers (the
    /// client connects to one and fails over to the others).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Copies of each stream on a NATS cluster (3 on three nodes), and of
    /// each durable consumer. Applied at start-up, also to a stream or
    /// consumer that exists with another count.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// Prefix of stream and subject names, to share one NATS between
    /// deployments; both services must use the same.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    pub events_prefix: String,
    /// JetStream's duplicate window of both streams; an existing stream with a
    /// shorter one is raised to it at start-up.
    #[arg(long, env = "DUPLICATE_WINDOW", default_value = "2m", value_parser = crate::duration::parse)]
    pub duplicate_window: Duration,
    /// Publish what is already a batch (a relay's claimed rows, the CDC
    /// reader's committed transactions) as one atomic batch where the server
    /// takes them (nats-server 2.12+); `false` publishes message by message.
    #[arg(long, env = "ATOMIC_BATCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub atomic_batches: bool,
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before it is
    /// answered 503 `database_unavailable` (pool exhausted or database down).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse)]
    pub db_acquire_timeout: Duration,
    /// How long to wait for the database and NATS at start-up.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse)]
    pub startup_timeout: Duration,
    /// Request timeout, concurrency cap and admin listener.
    #[command(flatten)]
    pub http: HttpSettings,
}
