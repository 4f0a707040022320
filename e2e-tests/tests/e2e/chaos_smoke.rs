//! The fault matrix at random: every mode, a few hundred orders, a few faults
//! (kill -9 of order-service with its relay / CDC reader / projector, of
//! rewards-service and of nats-server, and a PostgreSQL crash).

use harness::Mode;
use harness::verdict::Tally;
use order_events_tools::chaos::{self, ChaosConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_random_faults_every_pattern_credits_each_acknowledged_order_once() {
    let config = ChaosConfig {
        modes: Mode::ALL.to_vec(),
        orders: 300,
        faults: 3,
        rate: 150.0,
        seed: 20_261_127,
        cluster: false,
    };
    let results = chaos::run(&config).await.expect("the chaos run");
    eprintln!("{}", chaos::table(&results));
    for r in &results {
        assert_eq!(r.acknowledged, 300, "{}", r.mode);
        if r.mode == "dual-write" {
            // The control: whatever it lost, the audit found and --repair
            // restored; nothing else is wrong.
            let lost = r.tally.lost;
            assert_eq!(
                Tally {
                    credited_once: r.tally.credited_once + lost,
                    lost: 0,
                    ..r.tally
                },
                Tally::exact(300)
            );
            assert_eq!(r.repaired.unwrap_or(0), lost);
        } else {
            assert_eq!(r.tally, Tally::exact(300), "{}", r.mode);
            assert!(r.audit_consistent, "{}", r.mode);
        }
    }
}

/// The same on a three-node NATS cluster, with its nodes killed, cut off
/// and paused among the faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_random_faults_on_a_cluster_every_pattern_credits_each_acknowledged_order_once() {
    let _turn = harness::cluster::take_turn().await;
    let config = ChaosConfig {
        modes: vec![Mode::Outbox, Mode::Cdc, Mode::SelfRead],
        orders: 150,
        faults: 3,
        rate: 50.0,
        seed: 20_261_128,
        cluster: true,
    };
    let results = chaos::run(&config).await.expect("the chaos run");
    eprintln!("{}", chaos::table(&results));
    for r in &results {
        assert_eq!(
            (r.acknowledged, r.tally),
            (150, Tally::exact(150)),
            "{}",
            r.mode
        );
        assert!(r.audit_consistent, "{}", r.mode);
    }
}
