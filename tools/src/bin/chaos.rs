//! Places orders at a steady rate in every mode while processes and servers
//! are killed and restarted at random, then compares what the clients were
//! told with what was credited.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p order-events-tools --bin chaos -- --modes all --orders 10000
//! cargo run --release -p order-events-tools --bin chaos -- --cluster --modes outbox,cdc,self-read
//! ```

use clap::Parser;
use harness::verdict::Tally;
use order_events_tools::chaos::{self, ChaosConfig};
use order_events_tools::modes::ModeArg;

#[derive(Parser)]
#[command(about = "Kill everything at random while orders flow; count lost and doubled credits")]
struct Args {
    /// The modes to run, comma-separated, or `all`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    modes: Vec<ModeArg>,
    /// Orders to have acknowledged per mode.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// Faults per mode.
    #[arg(long, default_value_t = 8)]
    faults: usize,
    /// Orders per second the clients aim at.
    #[arg(long, default_value_t = 400.0)]
    rate: f64,
    /// Seed of the fault schedule (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Run on a three-node NATS cluster (streams replicated to all three),
    /// adding kills, cuts and pauses of its nodes to the random faults.
    #[arg(long)]
    cluster: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("seed {seed}");
    let started = std::time::Instant::now();
    let results = chaos::run(&ChaosConfig {
        modes: ModeArg::modes(&args.modes),
        orders: args.orders,
        faults: args.faults,
        rate: args.rate,
        seed,
        cluster: args.cluster,
    })
    .await?;
    println!("{}", chaos::table(&results));
    println!(
        "wall time {:.0} s, seed {seed}",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    let patterns_sound = results
        .iter()
        .filter(|r| r.mode != "dual-write")
        .all(|r| r.tally == Tally::exact(r.acknowledged));
    anyhow::ensure!(patterns_sound, "a pattern lost or doubled credits");
    Ok(())
}
