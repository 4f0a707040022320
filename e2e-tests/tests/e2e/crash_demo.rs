//! `scripts/demo.sh --crash`, as a test: one order per mode into a crash of
//! order-service between the order's COMMIT and any publish (self-read:
//! between the PubAck and the answer). Every pattern stores the order and
//! credits it exactly once; the dual write stores it and never credits it.

use harness::Mode;
use order_events_tools::crash_demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_demo_credits_once_in_every_pattern_and_loses_in_the_control() {
    let outcomes = crash_demo::run().await;
    let table = crash_demo::table(&outcomes);
    for outcome in &outcomes {
        let credited = if outcome.mode == Mode::DualWrite {
            0
        } else {
            1
        };
        assert_eq!(
            (outcome.stored, outcome.credited),
            (1, credited),
            "{:?}:\n{table}",
            outcome.mode
        );
        assert!(
            outcome
                .told
                .starts_with("no answer (the process died); retry: 20"),
            "{:?}:\n{table}",
            outcome.mode
        );
        assert!(outcome.told.ends_with(" replayed"), "{table}");
    }
}
