//! A short run of the benchmark, so that it cannot rot. Its numbers are
//! reported by the benchmark itself, never asserted here.

use std::time::Duration;

use harness::Mode;
use order_events_tools::bench::topology::{self, Topology};
use order_events_tools::bench::{self, BenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_every_mode_and_writes_its_report() {
    let config = BenchConfig {
        modes: Mode::ALL.to_vec(),
        duration: Duration::from_secs(1),
        concurrency: 2,
        runs: 1,
    };
    let report = bench::run(&config).await.expect("the benchmark runs");
    let modes: Vec<_> = report.results.iter().map(|r| r.mode).collect();
    assert_eq!(
        modes,
        ["outbox", "outbox-cdc", "cdc", "self-read", "dual-write"]
    );
    for result in &report.results {
        assert_ne!(result.median.orders, 0.0, "{} placed no order", result.mode);
    }
    assert_eq!(report.runs.len(), Mode::ALL.len());
    // An introduction, then five tables of a row per mode, each after a
    // paragraph of its own, and a blank line between one table and the next.
    assert_eq!(report.markdown().lines().count(), 2 + 5 * (2 + 2 + 5) + 4);
    assert!(report.svg().starts_with("<svg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_comparison_runs_every_topology_and_writes_its_report() {
    let _turn = harness::cluster::take_turn().await;
    let config = BenchConfig {
        modes: vec![Mode::Outbox],
        duration: Duration::from_secs(1),
        concurrency: 2,
        runs: 1,
    };
    let report = topology::run(&config, 1)
        .await
        .expect("the comparison runs");
    let rows: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.mode, r.topology))
        .collect();
    assert_eq!(rows, Topology::ALL.map(|t| ("outbox", t)));
    assert_eq!(report.results[0].ratio_to_single, 1.0);
    for result in &report.results {
        assert_ne!(
            result.orders,
            0,
            "{} placed no order",
            result.topology.label()
        );
    }
    assert_eq!(report.markdown().lines().count(), 2 + 2 + 4);
}
