//! Throughput and consistency lag of every mode, against the database's own
//! limit, on private PostgreSQL (fsync on) and NATS servers.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p e2e-tests --bin bench -- --modes all --duration 30s --concurrency 16
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use e2e_tests::bench::{self, BenchConfig, BenchMode};

#[derive(Parser)]
#[command(about = "Benchmark every mode against the database's own limit")]
struct Args {
    /// `all`, or a comma-separated list of outbox, outbox-cdc, cdc, self-read, dual-write.
    #[arg(long, default_value = "all")]
    modes: String,
    /// Length of the full-speed phase, e.g. `30s` (the half-load phase lasts half).
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Where bench.md, bench.json and bench.svg are written.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|_| format!("{text:?} is not a duration like 30s"))
}

fn parse_modes(text: &str) -> anyhow::Result<Vec<BenchMode>> {
    if text == "all" {
        return Ok(BenchMode::ALL.to_vec());
    }
    text.split(',')
        .map(|name| {
            BenchMode::ALL
                .into_iter()
                .find(|mode| mode.name() == name.trim())
                .ok_or_else(|| anyhow::anyhow!("unknown mode {name:?}"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = BenchConfig {
        modes: parse_modes(&args.modes)?,
        duration: args.duration,
        concurrency: args.concurrency,
    };
    let report = bench::run(&config).await?;
    std::fs::create_dir_all(&args.out)?;
    let markdown = report.markdown();
    std::fs::write(args.out.join("bench.md"), &markdown)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("bench.svg"), report.svg())?;
    println!("{markdown}");
    eprintln!("written to {}", args.out.display());
    Ok(())
}
