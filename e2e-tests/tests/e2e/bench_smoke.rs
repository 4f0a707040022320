//! A short run of the benchmark, so that it cannot rot. Its numbers are
//! reported by the benchmark itself, never asserted here; its counts are.

use std::time::Duration;

use harness::Mode;
use order_events_tools::bench::subjects::{self, Answer, Case, Layout, SubjectsConfig, Way};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subjects_comparison_stores_every_event_under_each_layout() {
    const ORDERS: usize = 2_000;
    const PARTITIONS: u32 = 256;
    let config = SubjectsConfig {
        layouts: Layout::ALL.to_vec(),
        orders: ORDERS,
        partitions: PARTITIONS,
        batch: 200,
        cancellations: 100,
        runs: 1,
    };
    let report = subjects::run(&config).await.expect("the comparison runs");
    let layouts: Vec<_> = report.runs.iter().map(|r| r.layout).collect();
    assert_eq!(layouts, Layout::ALL);
    for run in &report.runs {
        let name = run.layout.name();
        assert_eq!(run.state.messages, ORDERS as u64, "{name}: messages stored");
        assert_eq!(
            run.state.num_subjects, run.distinct_subjects,
            "{name}: the stream's subjects are those published to"
        );
        assert!(
            run.after_load.rss_mib > 0.0,
            "{name}: the server's memory was read"
        );
        assert!(
            run.store_bytes >= run.state.bytes,
            "{name}: the store holds the stream"
        );
        assert!(run.restart.secs > 0.0 && run.restart_after_kill.secs > 0.0);
    }
    let subjects_of = |layout| report.runs.iter().find(|r| r.layout == layout).unwrap();
    assert_eq!(subjects_of(Layout::OneSubject).state.num_subjects, 1);
    assert_eq!(
        subjects_of(Layout::PerOrder).state.num_subjects,
        ORDERS as u64
    );
    // 2,000 orders leave a partition of 256 empty with odds of about 1 in 10.
    let partitions = subjects_of(Layout::Partitions).state.num_subjects;
    assert!(
        (250..=u64::from(PARTITIONS)).contains(&partitions),
        "{partitions} partitions hold events"
    );
    assert_eq!(report.results[0].ratio_to_one_subject.unwrap().median, 1.0);

    let cancelled: Vec<_> = report
        .cancellations
        .iter()
        .map(|c| (c.way, c.orders))
        .collect();
    assert_eq!(cancelled, Way::ALL.map(|way| (way, 100)));
    let answer = |case| {
        &report
            .checks
            .iter()
            .find(|c| c.case == case)
            .unwrap_or_else(|| panic!("no answer to {case:?}"))
            .answer
    };
    const WRONG_LAST_SEQUENCE: u64 = 10071;
    for case in [
        Case::SecondPlaced,
        Case::CancelledExpectingTooLittle,
        Case::CancelledNeverPlaced,
        Case::OrderSubjectExpectingTooLittle,
    ] {
        assert!(
            matches!(
                answer(case),
                Answer::Refused {
                    code: WRONG_LAST_SEQUENCE,
                    ..
                }
            ),
            "{case:?}: {}",
            answer(case).label()
        );
    }
    let Answer::Stored {
        sequence: cancelled_at,
        ..
    } = *answer(Case::Cancelled)
    else {
        panic!(
            "a cancellation in place: {}",
            answer(Case::Cancelled).label()
        );
    };
    // A retry is never stored twice, with its expectation or without.
    assert!(!matches!(
        answer(Case::RetryWithExpectation),
        Answer::Stored { .. }
    ));
    assert_eq!(
        *answer(Case::RetryWithoutExpectation),
        Answer::Duplicate {
            sequence: cancelled_at
        }
    );
    assert!(matches!(
        answer(Case::BatchTwoEventsOfASubject),
        Answer::Refused { .. }
    ));
    assert!(matches!(
        answer(Case::BatchOneOutOfPlace),
        Answer::Refused { .. }
    ));

    let markdown = report.markdown("bench --subjects");
    assert_eq!(
        markdown.lines().filter(|l| l.starts_with("| ")).count(),
        (1 + Layout::ALL.len()) + (1 + Way::ALL.len()) + (1 + report.checks.len())
    );
}
