use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use service_kit::duration;
use service_kit::limits::HttpSettings;

/// rewards-service: credits reward points for every order, exactly once.
#[derive(Debug, Clone, Parser)]
#[command(name = "rewards-service", version, about)]
pub struct Config {
    /// PostgreSQL database owned by rewards-service.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Port 0 picks a free port; the log says which.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8082")]
    pub listen_addr: SocketAddr,
    /// Prefix of stream and subject names; must match order-service's.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    pub events_prefix: String,
    /// JetStream's duplicate window (only used if this service creates the stream).
    #[arg(long, env = "DUPLICATE_WINDOW", default_value = "2m", value_parser = duration::parse)]
    pub duplicate_window: Duration,
    /// Most messages credited in one transaction (a batch is whatever has
    /// arrived, so a quiet stream is credited one message at a time).
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 100)]
    pub consumer_batch: usize,
    /// How long JetStream waits for an ack before redelivering (set when the
    /// consumer is created).
    #[arg(long, env = "CONSUMER_ACK_WAIT", default_value = "30s", value_parser = duration::parse)]
    pub consumer_ack_wait: Duration,
    /// Deliveries of a message that keeps failing before it is dead-lettered
    /// (failures while the database is unreachable do not count).
    #[arg(long, env = "CONSUMER_MAX_DELIVER", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..))]
    pub consumer_max_deliver: i64,
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
