use std::net::SocketAddr;

use clap::Parser;
use service_kit::consumer::ConsumerArgs;
use service_kit::startup::ServiceArgs;

/// rewards-service: credits reward points for every order, exactly once.
#[derive(Debug, Clone, Parser)]
#[command(name = "rewards-service", version, about)]
pub struct Config {
    /// What every service takes: database, NATS, stream names, HTTP limits.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Port 0 picks a free port; the log says which.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8082")]
    pub listen_addr: SocketAddr,
    /// The consumer that credits the events.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_flags_are_consistent() {
        super::Config::command().debug_assert();
    }
}
