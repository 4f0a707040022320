//! A stream that exists before the services start (made by an operator, an
//! older release, infrastructure code) is checked against what the patterns
//! need: one that would delete events is refused at start-up with a message
//! naming the setting, by both services whatever the mode; one whose
//! duplicate window is shorter than configured is raised to it, which loses
//! nothing.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use harness::{Mode, TestEnv};
use shared_events::Names;

/// Creates the test's order stream as an operator would have, before any
/// service runs: the right name, subjects and storage, and `config`'s limits.
async fn precreate_order_stream(env: &TestEnv, config: Config) {
    let names = Names::new(env.events_prefix()).expect("valid prefix");
    env.jetstream()
        .await
        .create_stream(Config {
            name: names.stream().to_owned(),
            subjects: vec![names.stream_subjects()],
            storage: StorageType::File,
            ..config
        })
        .await
        .expect("creating the stream by hand");
}

/// The error of a start that must be refused, with the log lines it carries.
async fn refused(start: harness::env::ServiceStart<'_>, who: &str) -> String {
    let error = start
        // No backtrace, so that the error is among the log lines reported.
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .unwrap_or_else(|| panic!("{who} started on a stream that deletes events"));
    format!("{error:#}")
}

#[tokio::test]
async fn a_stream_that_deletes_events_by_age_stops_both_services_at_start_up() {
    let env = TestEnv::new("stream_max_age").await;
    precreate_order_stream(
        &env,
        Config {
            max_age: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await;

    let orders = refused(env.order_service(Mode::SelfRead), "order-service").await;
    assert!(orders.contains("max_age is 1h"), "{orders}");
    assert!(orders.contains("needs 0 (unlimited)"), "{orders}");
    // rewards-service does not know the mode and applies the same rules.
    let rewards = refused(env.rewards_service(), "rewards-service").await;
    assert!(rewards.contains("max_age is 1h"), "{rewards}");
}

#[tokio::test]
async fn a_stream_with_interest_retention_is_refused_at_start_up() {
    let env = TestEnv::new("stream_interest").await;
    precreate_order_stream(
        &env,
        Config {
            retention: RetentionPolicy::Interest,
            ..Default::default()
        },
    )
    .await;

    let started = std::time::Instant::now();
    let orders = refused(env.order_service(Mode::Outbox), "order-service").await;
    assert!(orders.contains("retention is interest"), "{orders}");
    assert!(orders.contains("needs limits"), "{orders}");
    // A setting is not a server that is down: refused at once, not retried
    // until the start-up timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_duplicate_window_shorter_than_configured_is_raised_at_start_up() {
    let env = TestEnv::new("stream_dup_window").await;
    precreate_order_stream(
        &env,
        Config {
            duplicate_window: Duration::from_secs(10),
            allow_rollup: true,
            ..Default::default()
        },
    )
    .await;

    let _orders = env
        .order_service(Mode::SelfRead)
        .set("DUPLICATE_WINDOW", "3m")
        .start()
        .await;

    let names = Names::new(env.events_prefix()).expect("valid prefix");
    let config = env
        .jetstream()
        .await
        .get_stream(names.stream())
        .await
        .expect("the order stream")
        .info()
        .await
        .expect("its info")
        .config
        .clone();
    assert_eq!(config.duplicate_window, Duration::from_secs(180));
    assert!(!config.allow_rollup, "rollups are still allowed");
    let warned = env
        .log()
        .lines()
        .iter()
        .any(|line| line.contains("raised the stream's duplicate window"));
    assert!(warned, "no warning says the window was raised");
}
