//! `order-events audit`: is every order credited exactly once, with the right
//! points? Compares what order-service holds with what rewards-service
//! credited and each balance holds, through their own HTTP APIs only (no
//! reaching into another service's database), with the stream's events per
//! order, and with the order ids the clients were told about when given;
//! with `--repair` re-publishes `OrderPlaced` for orders without a credit —
//! idempotently: the event id derives from the order id, and the ledger
//! credits an order once whatever the event id.
//!
//! `order-events dlq list | redrive [--id ID]`: the dead-lettered events, and
//! sending them back to their consumers once the cause is fixed.
//!
//! `order-events cdc resync`: after a replication slot was lost, re-publish
//! the orders the stream does not hold, then let order-service make a new slot.
//!
//! `order-events console`: every pattern side by side in a browser, on a
//! private PostgreSQL and nats-server, with buttons that kill and delay.
//!
//! Exit status: 0 consistent (or fully repaired, or done), 1 inconsistent,
//! 2 error.

mod audit;
mod dlq;
mod resync;
mod stream;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use order_events_tools::console::{self, ConsoleMode};

#[derive(Parser)]
#[command(name = "order-events", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare orders with credits, balances and the stream: orders without a
    /// credit, credits with the wrong points, credits for orders order-service
    /// does not hold, balances that are not the points of the customer's
    /// credited orders, orders in the stream under two event ids, and (with
    /// --acknowledged) orders no client was told about and acknowledged
    /// orders order-service does not hold.
    Audit(AuditArgs),
    /// Change data capture operations.
    #[command(subcommand)]
    Cdc(CdcCommand),
    /// Every pattern side by side in the browser: starts a private PostgreSQL
    /// and nats-server and each mode's services, places orders at a rate, and
    /// shows live what each placed, stored and credited, its lag and its
    /// audit, with buttons that kill services, stop the broker, delay its
    /// replies, or crash order-service at the next order. Needs the services
    /// built with crash points: `cargo build --workspace --all-features --bins`.
    Console(ConsoleArgs),
    /// What the consumers dead-lettered, and sending it back after a fix.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        #[command(flatten)]
        args: DlqArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters: id, consumer, event id and reason.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Republish dead letters to their original subject (every consumer sees
    /// them again, idempotently), then delete them from the dead-letter stream.
    /// The self-read projector's letters are applied to the order history in
    /// order-service's database instead (ORDERS_DATABASE_URL), in any mode.
    Redrive {
        /// Only the dead letter with this id (as `dlq list` shows it).
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Args)]
pub struct ConsoleArgs {
    /// Where the page is served.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Modes to start at once, comma-separated; otherwise the page starts them.
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<ConsoleMode>,
    /// Orders per second per mode for `--modes`.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

#[derive(Args)]
pub struct DlqArgs {
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,
    /// Prefix of stream and subject names, as the services use it.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "", global = true)]
    events_prefix: String,
    /// order-service's database: where `redrive` applies the self-read
    /// projector's letters (needed only for those).
    #[arg(
        long,
        env = "ORDERS_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    orders_database_url: Option<String>,
}

#[derive(Subcommand)]
enum CdcCommand {
    /// After a replication slot was lost or swapped: re-publish OrderPlaced
    /// for every order the stream does not hold, then forget the slot.
    Resync(resync::ResyncArgs),
}

#[derive(Args)]
pub struct AuditArgs {
    /// order-service's base URL.
    #[arg(
        long,
        env = "ORDER_SERVICE_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    orders: String,
    /// rewards-service's base URL.
    #[arg(
        long,
        env = "REWARDS_SERVICE_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    rewards: String,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// Re-publish OrderPlaced for every order without a credit.
    #[arg(long)]
    repair: bool,
    /// A file of the order ids the clients were told about (201 or 202),
    /// one a line: an order order-service holds that is not in it (a second
    /// order for one request) and one in it that order-service does not
    /// hold are inconsistencies. Without it, such an order looks like any other.
    #[arg(long, value_name = "FILE")]
    acknowledged: Option<std::path::PathBuf>,
    /// NATS server whose stream is read (and re-published to with --repair).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Prefix of stream and subject names, as the services use it.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    events_prefix: String,
}

async fn console(args: &ConsoleArgs) -> anyhow::Result<()> {
    let modes: Vec<_> = args.modes.iter().map(|mode| mode.0).collect();
    console::main(args.listen, &modes, args.rate).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::Audit(args) => audit::run(&args).await,
        Command::Dlq { command, args } => match command {
            DlqCommand::List { json } => dlq::list(&args, json).await,
            DlqCommand::Redrive { id } => dlq::redrive(&args, id).await,
        },
        Command::Cdc(CdcCommand::Resync(args)) => resync::run(&args).await,
        Command::Console(args) => console(&args).await.map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
