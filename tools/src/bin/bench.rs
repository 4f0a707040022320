//! Throughput and consistency lag of every mode, against the database's own
//! limit, on private PostgreSQL (fsync on) and NATS servers, with the CPU
//! time each process spends per 1,000 orders.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p order-events-tools --bin bench -- --modes all --duration 30s --concurrency 16 --runs 3
//! ```
//!
//! Each mode runs `--runs` times on fresh servers, the modes interleaved
//! (every mode once per round, forward then backward), and every figure is
//! the median of its runs, with the min–max beside it (see
//! `order_events_tools::bench` and `docs/benchmark.md`).
//!
//! With `--waiters N`, it measures instead what N concurrent
//! `GET /orders/{id}?wait=10s` readers cost placement, in each of `--modes`
//! (phases of `--duration`, alternating without and with the readers):
//!
//! ```text
//! cargo run --release -p order-events-tools --bin bench -- --modes self-read --waiters 500 --duration 10s --rounds 4
//! ```
//!
//! With `--topologies`, it measures instead what replication and a second
//! instance cost: each of `--modes` at full speed on one NATS node and on a
//! three-node cluster (R3), each with one and with two instances of each
//! service, as ratios to the mode's one node, one instance row, in
//! `--rounds` rounds that run the rows forward and backward in turn:
//!
//! ```text
//! cargo run --release -p order-events-tools --bin bench -- --modes outbox,cdc,self-read --topologies --duration 8s
//! ```
//!
//! With `--subjects`, it measures instead what a subject per order costs
//! the order stream on nats-server alone, against the single subject of
//! today and `--partitions` partitions: the publish rate, the server's
//! memory, the stream's subjects, the store on disk and the restart time
//! after `--orders` orders, in `--runs` interleaved runs; then, with a
//! subject per order, cancellations that the broker checks for their place
//! and its answers to events out of place (`docs/bench/subjects.md`, whose
//! part from its `## Interpretation` heading on a new run keeps):
//!
//! ```text
//! cargo run --release -p order-events-tools --bin bench -- --subjects --orders 1000000 --runs 3
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use order_events_tools::bench::subjects::{self, Layout, SubjectsConfig};
use order_events_tools::bench::waiters::{self, WaitersConfig};
use order_events_tools::bench::{self, BenchConfig, topology};
use order_events_tools::modes::ModeArg;

#[derive(Parser)]
#[command(about = "Benchmark every mode against the database's own limit")]
struct Args {
    /// The modes to run, comma-separated, or `all`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    modes: Vec<ModeArg>,
    /// Length of the full-speed phase, e.g. `30s` or `2m` (the half-load
    /// phase lasts half).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Runs of each mode, each on fresh servers; a figure is the median of
    /// its runs. (Not for `--waiters` and `--topologies`, which have
    /// `--rounds`.)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Compare placement with and without this many `?wait` readers instead.
    #[arg(long)]
    waiters: Option<usize>,
    /// With `--waiters`: phases of each kind (each lasts `--duration`);
    /// with `--topologies`: runs of each topology.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Compare instead, per mode, the full-speed throughput on one NATS node
    /// and on a three-node cluster (R3), with one and two instances of each
    /// service.
    #[arg(long, conflicts_with = "waiters")]
    topologies: bool,
    /// Compare instead, on nats-server alone, the order stream with one
    /// subject, a subject per order and bounded partitions (`--orders`,
    /// `--partitions`, `--layouts`, `--batch`, `--cancellations`, `--runs`).
    #[arg(long, conflicts_with_all = ["waiters", "topologies"])]
    subjects: bool,
    /// With `--subjects`: the layouts, comma-separated, the first the one
    /// the others are rated against.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "one-subject,per-order,partitions"
    )]
    layouts: Vec<Layout>,
    /// With `--subjects`: orders placed per run, one `OrderPlaced` each.
    #[arg(long, default_value_t = 1_000_000)]
    orders: usize,
    /// With `--subjects`: partitions of the `partitions` layout.
    #[arg(long, default_value_t = 256)]
    partitions: u32,
    /// With `--subjects`: events per batch (the outbox relay's
    /// `RELAY_BATCH_SIZE`).
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// With `--subjects`: orders cancelled each way per run of `per-order`.
    #[arg(long, default_value_t = 100_000)]
    cancellations: usize,
    /// Where bench.md, bench.json and bench.svg (or waiters.md, or
    /// topology.md and topology.json, or subjects.md and subjects.json)
    /// are written.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.waiters {
        return compare_waiters(&args, n).await;
    }
    if args.subjects {
        return compare_subjects(&args).await;
    }
    let config = BenchConfig {
        modes: ModeArg::modes(&args.modes),
        duration: args.duration,
        concurrency: args.concurrency,
        runs: args.runs,
    };
    if args.topologies {
        return compare_topologies(&args, &config).await;
    }
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

async fn compare_topologies(args: &Args, config: &BenchConfig) -> anyhow::Result<()> {
    let report = topology::run(config, args.rounds).await?;
    std::fs::create_dir_all(&args.out)?;
    let markdown = report.markdown();
    std::fs::write(args.out.join("topology.md"), &markdown)?;
    std::fs::write(
        args.out.join("topology.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{markdown}");
    eprintln!("written to {}", args.out.display());
    Ok(())
}

async fn compare_subjects(args: &Args) -> anyhow::Result<()> {
    let report = subjects::run(&SubjectsConfig {
        layouts: args.layouts.clone(),
        orders: args.orders,
        partitions: args.partitions,
        batch: args.batch,
        cancellations: args.cancellations,
        runs: args.runs,
    })
    .await?;
    let command =
        std::iter::once("cargo run --release -p order-events-tools --bin bench --".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
    let markdown = report.markdown(&command);
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("subjects.md");
    // What was written by hand below the tables stays.
    let kept = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| {
            old.find(subjects::INTERPRETATION)
                .map(|at| old[at..].to_owned())
        })
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!("{markdown}\n{kept}").trim_end().to_owned() + "\n",
    )?;
    std::fs::write(
        args.out.join("subjects.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{markdown}");
    eprintln!("written to {}", path.display());
    Ok(())
}

async fn compare_waiters(args: &Args, n: usize) -> anyhow::Result<()> {
    let mut markdown = format!(
        "Placement with and without {n} concurrent `?wait=10s` readers of absent orders: \
         {} rounds of {} s each way, {} clients.\n\n",
        args.rounds,
        args.duration.as_secs_f64(),
        args.concurrency
    );
    for mode in ModeArg::modes(&args.modes) {
        let result = waiters::run(&WaitersConfig {
            mode,
            waiters: n,
            duration: args.duration,
            rounds: args.rounds,
            concurrency: args.concurrency,
        })
        .await?;
        let table = result.markdown();
        markdown.push_str(if markdown.contains("| mode |") {
            table.lines().nth(2).map_or("", |row| row)
        } else {
            &table
        });
        if !markdown.ends_with('\n') {
            markdown.push('\n');
        }
        println!(
            "{}: {:.0}/s placed with {n} waiters, {:.0}/s without: ratio {:.3} ({:+.1} %)",
            result.mode,
            result.with_per_sec,
            result.without_per_sec,
            result.ratio,
            (result.ratio - 1.0) * 100.0
        );
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("waiters.md"), &markdown)?;
    println!("{markdown}");
    eprintln!("written to {}", args.out.join("waiters.md").display());
    Ok(())
}
