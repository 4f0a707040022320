//! What `/metrics` says, checked against the scrape itself and against the
//! broker's and the database's own counts:
//! - every metric follows one naming (the `order_events_` prefix, or the
//!   standard `process_`; `_total` on counters and only there; base units),
//!   keeps one label set wherever it is recorded, and is listed in the
//!   table of `docs/observability.md`;
//! - the backlog gauges read what waits: rows in the outbox while the broker
//!   is down, messages a dead consumer has not taken, the dead-letter depth;
//! - the alert rules in `docs/alerts.yml` pass `promtool check rules` and
//!   their unit tests, where promtool is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use harness::api::{assert_credited_exactly, order, place_ok};
use harness::{CONVERGE, Mode, TestEnv, eventually};

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

async fn scrape(env: &TestEnv, base_url: &str) -> String {
    let response = env
        .http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Each family's type, from its `# TYPE` line.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| pair.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
                .collect();
            (name.to_owned(), labels, value.parse().expect("a number"))
        })
        .collect()
}

/// The value of the sample `name` with `labels`, if there is one.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text).into_iter().find_map(|(n, l, v)| {
        (n == name
            && labels
                .iter()
                .all(|(key, value)| l.get(*key).map(String::as_str) == Some(*value)))
        .then_some(v)
    })
}

/// The metric names the table of `docs/observability.md` lists.
fn documented_metrics() -> BTreeSet<String> {
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/observability.md");
    std::fs::read_to_string(page)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once(" |"))
        .flat_map(|(names, _)| {
            names
                .split(['`', ',', ' '])
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|name| name.starts_with("order_events_") || name.starts_with("process_"))
        .collect()
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum` and
/// `_count` belong to it).
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base;
        }
    }
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_named_one_way_keeps_its_labels_and_is_documented() {
    let listed = documented_metrics();
    assert!(
        listed.len() >= 20,
        "the metrics table of docs/observability.md: {listed:?}"
    );
    // Label keys of each family, over every series of both services, in
    // the outbox (polling relay) and in cdc.
    let mut label_keys: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for mode in [Mode::Outbox, Mode::Cdc] {
        let env = TestEnv::new(&format!("metric_names_{}", mode.name())).await;
        let orders = env.order_service(mode).start().await;
        let rewards = env.rewards_service().start().await;
        place_ok(&env.http, orders.url(), &order("ana", &[("SKU-1", 1, 700)])).await;
        assert_credited_exactly(&env, 1).await;
        // Unknown routes and methods too: their labels come from fixed sets.
        env.http
            .get(format!("{}/nowhere", orders.url()))
            .send()
            .await
            .unwrap();
        if mode == Mode::Cdc {
            // The slot's gauges come with the reader's first heartbeat.
            eventually("the slot's gauges", CONVERGE, || async {
                let text = scrape(&env, orders.url()).await;
                text.contains("order_events_cdc_slot_lag_bytes")
                    .then_some(())
            })
            .await;
        }
        for base in [orders.url(), rewards.url()] {
            let text = scrape(&env, base).await;
            let types = types(&text);
            for (name, kind) in &types {
                seen.insert(name.clone());
                assert!(
                    name.starts_with("order_events_") || name.starts_with("process_"),
                    "{name}: not under the prefix"
                );
                assert_eq!(
                    kind == "counter",
                    name.ends_with("_total"),
                    "{name} is a {kind}: `_total` is for counters, and every counter has it"
                );
                for unit in ["_ms", "_milliseconds", "_kb", "_minutes"] {
                    assert!(!name.contains(unit), "{name}: use base units");
                }
                if name
                    .split('_')
                    .any(|word| word == "duration" || word == "age")
                {
                    assert!(name.ends_with("_seconds"), "{name}: a time is in seconds");
                }
                assert!(
                    listed.contains(name),
                    "{name} is missing from the table of docs/observability.md"
                );
            }
            for (name, mut labels, _) in samples(&text) {
                let family = family(&name, &types).to_owned();
                labels.remove("le");
                label_keys
                    .entry(family)
                    .or_default()
                    .insert(labels.into_keys().collect());
            }
        }
    }
    for (family, sets) in &label_keys {
        assert_eq!(sets.len(), 1, "{family} has label sets {sets:?}");
    }
    // What the outbox and cdc deployments report whatever happened: the
    // counts read at each scrape, the slot, the process, the requests.
    for expected in [
        "order_events_outbox_pending_rows",
        "order_events_outbox_oldest_age_seconds",
        "order_events_consumer_pending_messages",
        "order_events_consumer_ack_pending_messages",
        "order_events_dead_letter_messages",
        "order_events_published_total",
        "order_events_publish_batch_size",
        "order_events_consumer_batch_size",
        "order_events_consumed_total",
        "order_events_cdc_reader_active",
        "order_events_cdc_slot_lag_bytes",
        "order_events_cdc_slot_retained_wal_bytes",
        "order_events_http_request_duration_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(seen.contains(expected), "{expected} not exported: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_gauges_read_what_waits() {
    let env = TestEnv::with_private_nats("metric_backlog").await;
    let orders = env.order_service(Mode::Outbox).start().await;
    let mut rewards = env.rewards_service().start().await;
    place_ok(&env.http, orders.url(), &order("bo", &[("SKU-1", 1, 100)])).await;
    assert_credited_exactly(&env, 1).await;

    // Rewards dies; four orders are published that nobody takes.
    rewards.kill().await;
    for _ in 0..4 {
        place_ok(&env.http, orders.url(), &order("bo", &[("SKU-1", 1, 100)])).await;
    }
    eventually("the four orders in the stream", CONVERGE, || async {
        (env.stream_messages().await == 5).then_some(())
    })
    .await;
    // The relay deletes its rows after the PubAcks: they count until then.
    let text = eventually("the outbox emptied", CONVERGE, || async {
        let text = scrape(&env, orders.url()).await;
        (value(&text, "order_events_outbox_pending_rows", &[]) == Some(0.0)).then_some(text)
    })
    .await;
    let rewards_consumer = [("consumer", "rewards")];
    let pending = value(
        &text,
        "order_events_consumer_pending_messages",
        &rewards_consumer,
    );
    let ack_pending = value(
        &text,
        "order_events_consumer_ack_pending_messages",
        &rewards_consumer,
    );
    // The broker's own count, read after the scrape; nothing moves while
    // no consumer runs. (Messages a dying client had asked for count as
    // awaiting their ack, the rest as pending: four in all.)
    let names = shared_events::Names::new(env.events_prefix()).unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = env
        .jetstream()
        .await
        .get_consumer_from_stream("rewards", names.stream())
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        (pending, ack_pending),
        (
            Some(info.num_pending as f64),
            Some(info.num_ack_pending as f64)
        ),
        "order-service reports the dead consumer's backlog as the broker counts it"
    );
    assert_eq!(info.num_pending + info.num_ack_pending as u64, 4);

    // The broker goes; three orders wait in the outbox, the oldest for longer
    // than the time between its commit and the scrape.
    env.stop_nats();
    for _ in 0..3 {
        place_ok(&env.http, orders.url(), &order("bo", &[("SKU-1", 1, 100)])).await;
    }
    let text = scrape(&env, orders.url()).await;
    assert_eq!(
        value(&text, "order_events_outbox_pending_rows", &[]),
        Some(3.0)
    );
    let oldest = value(&text, "order_events_outbox_oldest_age_seconds", &[]).unwrap();
    assert!(oldest > 0.0 && oldest < 60.0, "oldest row age {oldest}");

    // The broker returns with a message no consumer can read; rewards
    // returns, dead-letters it and credits the rest.
    env.start_nats();
    eventually("the outbox relayed", CONVERGE, || async {
        let text = scrape(&env, orders.url()).await;
        (value(&text, "order_events_outbox_pending_rows", &[]) == Some(0.0)).then_some(())
    })
    .await;
    shared_events::jetstream::publish(
        &env.jetstream().await,
        names.order_placed_subject(),
        uuid::Uuid::now_v7(),
        None,
        b"{not json".to_vec(),
    )
    .await
    .unwrap();
    let rewards = env.rewards_service().start().await;
    assert_credited_exactly(&env, 8).await;
    env.wait_until_consumed_by("rewards").await;
    let text = scrape(&env, rewards.url()).await;
    assert_eq!(
        value(&text, "order_events_dead_letter_messages", &[]),
        Some(1.0)
    );
    assert_eq!(env.dead_letters().await, 1);
    assert_eq!(
        value(
            &text,
            "order_events_consumer_pending_messages",
            &rewards_consumer
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "order_events_consumed_total",
            &[("consumer", "rewards"), ("outcome", "dead_lettered")]
        ),
        Some(1.0)
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Ok(promtool) = which::which("promtool") else {
        eprintln!("skipped: promtool is not installed (scripts/test.sh installs it as root)");
        return;
    };
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let output = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&docs)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every metric a rule reads is one the services export.
    let rules = std::fs::read_to_string(docs.join("alerts.yml")).unwrap();
    let listed = documented_metrics();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("order_events_") {
            let family = word.trim_end_matches("_count");
            assert!(
                listed.contains(family),
                "alerts.yml reads {word}, which is not exported"
            );
        }
    }
}
