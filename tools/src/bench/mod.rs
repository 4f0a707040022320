//! The benchmark: what consistency costs in each mode, and how stale
//! rewards-service gets, as ratios to limits measured in the same run.
//!
//! Each mode runs `runs` times, each time on fresh private servers
//! (PostgreSQL with fsync ON, NATS flushing every write), and a run is:
//! 1. **Baseline**: the mode's own write transaction (order + lines, plus the
//!    outbox row where the mode writes one) issued directly against the same
//!    PostgreSQL at the same concurrency, for the same time, from sqlx and
//!    from pgbench.
//! 2. **Full speed**: `concurrency` clients `POST /orders` as fast as they can;
//!    then the run waits until every placed order is credited.
//!    Throughput = orders / (last credit − first order), placed → credited.
//!    Over this phase, the CPU time of each process ([`cpu`]): the
//!    services, PostgreSQL with all its backends, nats-server and the load
//!    generator, per 1,000 orders.
//! 3. **Half load**: an open loop at half that throughput, to measure the
//!    consistency lag (order committed or accepted → reward committed, both
//!    stamped by the one PostgreSQL server's clock) and the publish lag
//!    (order → stored in JetStream, both clocks of this machine).
//! 4. Peak RSS of each service (`VmHWM`).
//!
//! The runs are interleaved: round `r` runs every mode once, forward in odd
//! rounds and backward in even ones, so that a drift over the whole
//! benchmark (a neighbour's build, a growing page cache) falls on every mode
//! alike rather than on the modes that happened to run last. Each figure
//! reported is the median over a mode's runs, with its min–max beside it;
//! a ratio is computed within each run (against that run's own baselines,
//! and against the dual-write run of the same round) before the median is
//! taken. Every percentile comes from an hdrhistogram
//! ([`figures::percentiles`]).
//!
//! [`phases`] runs one mode through these phases, with [`load`]'s clients
//! and against [`baseline`]'s and [`broker`]'s limits; [`figures`] holds
//! what a run measured and the statistics over runs; [`report`] renders the
//! results as Markdown tables and [`chart`] as an SVG chart; [`waiters`]
//! measures what `?wait` readers cost the write path; [`topology`] what
//! replication and a second instance cost; [`subjects`] what a subject per
//! order costs the order stream, on nats-server alone.

mod baseline;
pub mod broker;
mod chart;
mod cpu;
mod figures;
mod load;
mod phases;
mod report;
pub mod subjects;
pub mod topology;
pub mod waiters;

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

pub use self::cpu::Processes;
pub use self::figures::Figures;
use self::figures::{median, min_max};

/// A pattern as the benchmark runs it: the harness's [`Mode`](harness::Mode).
pub use harness::mode::Mode as BenchMode;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub modes: Vec<BenchMode>,
    /// Length of the full-speed phase (and of the baseline); the half-load
    /// phase lasts half of it.
    pub duration: Duration,
    pub concurrency: usize,
    /// Runs of each mode, each on fresh servers. (The topology comparison
    /// has rounds of its own and ignores this.)
    pub runs: usize,
}

/// One run of one mode, as it came out.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub mode: &'static str,
    /// The round it ran in, from 1.
    pub round: usize,
    #[serde(flatten)]
    pub figures: Figures<f64>,
}

/// One mode over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    /// The median of each figure over the runs (of a ratio, the median of
    /// the per-run ratios).
    #[serde(flatten)]
    pub median: Figures<f64>,
    /// The smallest and the largest value of each figure over the runs.
    pub spread: Figures<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub duration_secs: f64,
    pub concurrency: usize,
    pub cores: usize,
    pub runs_per_mode: usize,
    /// Clock ticks per second of `/proc/<pid>/stat`'s CPU times, whose
    /// granularity bounds the CPU table's.
    pub clock_ticks_per_second: f64,
    /// Per mode, in the order given.
    pub results: Vec<ModeResult>,
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
}

/// Runs every configured mode `config.runs` times, interleaved (see the
/// module's comment), reporting progress on stderr.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(config.runs > 0, "the benchmark needs at least one run");
    let ticks_per_second = cpu::ticks_per_second();
    let mut runs: Vec<Run> = Vec::new();
    for round in 1..=config.runs {
        for mode in round_order(&config.modes, round) {
            let label = format!("{} run {round}/{}", mode.name(), config.runs);
            let figures = phases::run_mode(mode, config, &label, ticks_per_second)
                .await
                .with_context(|| format!("benchmarking {label}"))?;
            runs.push(Run {
                mode: mode.name(),
                round,
                figures,
            });
        }
    }
    compare_with_control(&mut runs);
    Ok(Report {
        duration_secs: config.duration.as_secs_f64(),
        concurrency: config.concurrency,
        cores: cores(),
        runs_per_mode: config.runs,
        clock_ticks_per_second: ticks_per_second,
        results: summarize(&config.modes, &runs),
        runs,
    })
}

/// The modes in the order round `round` (from 1) runs them: as given in
/// odd rounds, reversed in even ones.
fn round_order(modes: &[BenchMode], round: usize) -> Vec<BenchMode> {
    let mut order = modes.to_vec();
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// Sets each run's cost against the dual-write run of its round, when
/// dual-write ran: a drift between rounds then cancels out of the ratio.
fn compare_with_control(runs: &mut [Run]) {
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    for round in 1..=rounds {
        let control = runs
            .iter()
            .find(|r| r.round == round && r.mode == BenchMode::DualWrite.name())
            .map(|r| r.figures.throughput);
        if let Some(control) = control {
            for run in runs.iter_mut().filter(|r| r.round == round) {
                run.figures.cost_vs_dual_write = Some(1.0 - run.figures.throughput / control);
            }
        }
    }
}

/// Each of `modes` over its runs: the median and the min–max of every figure.
fn summarize(modes: &[BenchMode], runs: &[Run]) -> Vec<ModeResult> {
    modes
        .iter()
        .map(|mode| {
            let of_mode: Vec<&Figures<f64>> = runs
                .iter()
                .filter(|r| r.mode == mode.name())
                .map(|r| &r.figures)
                .collect();
            ModeResult {
                mode: mode.name(),
                median: Figures::over_runs(&of_mode, median),
                spread: Figures::over_runs(&of_mode, min_max),
            }
        })
        .collect()
}

/// The cores this process may run on.
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A line on stderr about the run `label` names.
pub(super) fn progress(label: &str, message: &str) {
    eprintln!("[bench {label}] {message}");
}

#[cfg(test)]
mod tests {
    use super::{BenchMode, Figures, Run, compare_with_control, round_order, summarize};

    #[test]
    fn rounds_run_the_modes_forward_then_backward() {
        let modes = [BenchMode::Outbox, BenchMode::Cdc, BenchMode::DualWrite];
        assert_eq!(round_order(&modes, 1), modes);
        assert_eq!(
            round_order(&modes, 2),
            [BenchMode::DualWrite, BenchMode::Cdc, BenchMode::Outbox]
        );
        assert_eq!(round_order(&modes, 3), modes);
    }

    /// A run of `mode` in `round` with `throughput`, and the order-service
    /// CPU time and HTTP p99 set to the same number to follow them through.
    fn run(mode: BenchMode, round: usize, throughput: f64) -> Run {
        let mut figures = Figures::<f64> {
            throughput,
            http_p99_ms: throughput,
            ..Figures::default()
        };
        figures.cpu_seconds_per_1000_orders.order_service = throughput;
        Run {
            mode: mode.name(),
            round,
            figures,
        }
    }

    #[test]
    fn a_mode_reports_the_median_and_spread_of_its_runs_and_of_its_per_round_ratios() {
        use BenchMode::{DualWrite, Outbox};
        let mut runs = vec![
            run(Outbox, 1, 100.0),
            run(DualWrite, 1, 200.0),
            run(DualWrite, 2, 200.0),
            run(Outbox, 2, 300.0),
            run(Outbox, 3, 200.0),
            run(DualWrite, 3, 400.0),
        ];
        compare_with_control(&mut runs);
        let results = summarize(&[Outbox, DualWrite], &runs);
        let outbox = &results[0];
        assert_eq!(outbox.mode, "outbox");
        assert_eq!(outbox.median.throughput, 200.0);
        assert_eq!(outbox.spread.throughput, [100.0, 300.0]);
        assert_eq!(outbox.median.http_p99_ms, 200.0);
        assert_eq!(
            outbox.spread.cpu_seconds_per_1000_orders.order_service,
            [100.0, 300.0]
        );
        // Per round 1 − 100/200, 1 − 300/200, 1 − 200/400: not 1 − 200/200.
        assert_eq!(outbox.median.cost_vs_dual_write, Some(0.5));
        assert_eq!(outbox.spread.cost_vs_dual_write, Some([-0.5, 0.5]));
        assert_eq!(results[1].median.cost_vs_dual_write, Some(0.0));
    }

    #[test]
    fn without_a_control_there_is_no_cost() {
        let mut runs = vec![run(BenchMode::Outbox, 1, 100.0)];
        compare_with_control(&mut runs);
        let results = summarize(&[BenchMode::Outbox], &runs);
        assert_eq!(results[0].median.cost_vs_dual_write, None);
        assert_eq!(results[0].spread.cost_vs_dual_write, None);
    }
}
