use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_kit::duration;
use service_kit::limits::HttpSettings;

use crate::patterns::{Mode, PatternArgs};

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
    /// Largest order total accepted, in minor units of the order's currency;
    /// larger orders are refused with 422 `total_too_large`, before they can
    /// overflow anything downstream.
    #[arg(long, env = "MAX_ORDER_TOTAL_MINOR", default_value_t = 1_000_000_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_order_total_minor: i64,
    /// Each pattern's own settings.
    #[command(flatten)]
    pub patterns: PatternArgs,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Config::command().debug_assert();
    }
}
