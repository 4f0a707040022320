//! `LOG_FORMAT`: with `json`, every line a service prints is one JSON object
//! (timestamp, level, target, fields, and the span it happened in, such as
//! a relay batch with its size); any value but `text` and `json` is refused
//! before the service starts.

use std::time::Duration;

use harness::api::{order, place_ok};
use harness::{Mode, TestEnv, eventually};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_line_a_service_prints_is_a_json_object() {
    let env = TestEnv::new("json_logs").await;
    let orders = env
        .order_service(Mode::Outbox)
        .set("LOG_FORMAT", "json")
        .set("RUST_LOG", "info,order_service=debug")
        .start()
        .await;
    place_ok(&env.http, orders.url(), &order("ana", &[("SKU-1", 1, 500)])).await;
    let order_service_lines = || -> Vec<String> {
        env.log()
            .lines()
            .into_iter()
            .filter_map(|line| {
                let (label, text) = line.split_once("] ")?;
                label.contains("order-service").then(|| text.to_owned())
            })
            .collect()
    };
    // The relay publishes just after the order's commit answered.
    let lines = eventually("the relay's batch logged", Duration::from_secs(10), || {
        let lines = order_service_lines();
        let published = lines.iter().any(|l| l.contains("outbox batch published"));
        async move { published.then_some(lines) }
    })
    .await;
    drop(orders);
    let objects: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for (object, line) in objects.iter().zip(&lines) {
        for field in ["timestamp", "level", "target"] {
            assert!(object[field].is_string(), "no {field}: {line}");
        }
        assert!(
            object["fields"]["message"].is_string(),
            "no message: {line}"
        );
    }
    // A field keeps its type: the start-up line on the streams says
    // whether they take atomic batches as a boolean, not as text.
    let ready = objects
        .iter()
        .find(|o| o["fields"]["message"] == "JetStream streams ready")
        .unwrap_or_else(|| panic!("no start-up line on the streams in {lines:?}"));
    assert!(ready["fields"]["atomic_batches"].is_boolean(), "{ready}");
    // The relay's batch is a span with its size: the line it logs once the
    // batch is published carries it.
    let published = objects
        .iter()
        .find(|o| o["fields"]["message"] == "outbox batch published")
        .unwrap_or_else(|| panic!("no relay batch in {lines:?}"));
    assert_eq!(published["span"]["name"], "relay_batch", "{published}");
    assert_eq!(published["span"]["rows"], 1, "{published}");
    assert_eq!(published["fields"]["new"], 1, "{published}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_log_format_is_refused_with_the_values_it_takes() {
    let env = TestEnv::new("log_format_refused").await;
    let refused = env
        .rewards_service()
        .set("LOG_FORMAT", "yaml")
        .set("RUST_LIB_BACKTRACE", "0")
        .try_start()
        .await
        .err()
        .expect("rewards-service refuses LOG_FORMAT=yaml");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("LOG_FORMAT=\"yaml\": use text or json"),
        "{refused}"
    );
}
