use std::net::SocketAddr;

use clap::Parser;
use service_kit::startup::ServiceArgs;

use crate::patterns::{Mode, PatternArgs};

/// `MAX_ORDER_TOTAL_MINOR` when unset; the OpenAPI document names it.
pub const DEFAULT_MAX_ORDER_TOTAL_MINOR: i64 = 1_000_000_000;

/// order-service: takes orders and turns each into exactly one `OrderPlaced`.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-service", version, about)]
pub struct Config {
    /// What every service takes: database, NATS, stream names, HTTP limits.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Port 0 picks a free port; the log says which.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8081")]
    pub listen_addr: SocketAddr,
    /// How a stored order becomes an event.
    #[arg(long, env = "ORDER_MODE", value_enum, default_value_t = Mode::Outbox)]
    pub mode: Mode,
    /// Largest order total accepted, in minor units of the order's currency;
    /// larger orders are refused with 422 `total_too_large`, before they can
    /// overflow anything downstream.
    #[arg(long, env = "MAX_ORDER_TOTAL_MINOR", default_value_t = DEFAULT_MAX_ORDER_TOTAL_MINOR, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_order_total_minor: i64,
    /// Each pattern's own settings.
    #[command(flatten)]
    pub patterns: PatternArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Config::command().debug_assert();
    }
}
