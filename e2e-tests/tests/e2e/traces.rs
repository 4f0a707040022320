//! One order, one trace, in every mode: the client's `traceparent` is
//! continued by order-service's request span, the pattern's write, the
//! publish of the event (from the request, the outbox relay or the CDC
//! reader), and each consumer's processing of it — spans from both
//! services, exported over OTLP to a receiver in the harness that decodes
//! the protocol itself. The request's JSON log lines carry the same ids.

use std::time::Duration;

use e2e_tests::otlp::{Kind, OtlpReceiver, ReceivedSpan};
use harness::api::order;
use harness::{Mode, TestEnv, eventually};
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_one_order_is_one_trace() {
    one_order_is_one_trace(Mode::Outbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relayed_by_cdc_one_order_is_one_trace() {
    one_order_is_one_trace(Mode::OutboxCdc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_one_order_is_one_trace() {
    one_order_is_one_trace(Mode::Cdc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_read_one_order_is_one_trace() {
    one_order_is_one_trace(Mode::SelfRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_write_one_order_is_one_trace() {
    one_order_is_one_trace(Mode::DualWrite).await;
}

async fn one_order_is_one_trace(mode: Mode) {
    let env = TestEnv::new(&format!("trace_{}", mode.name().replace('-', "_"))).await;
    let receiver = OtlpReceiver::start().await;
    let exported = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let _rewards = env.rewards_service().set_all(exported).start().await;
    let orders = env
        .order_service(mode)
        .set_all(exported)
        .set("LOG_FORMAT", "json")
        .set("RUST_LOG", "info,tower_http=debug")
        .start()
        .await;

    // The client's own span: the trace and the parent order-service continues.
    let trace_id = Uuid::new_v4().simple().to_string();
    let client_span = trace_id[..16].to_owned();
    let response = env
        .http
        .post(format!("{}/orders", orders.url()))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&order("ana", &[("SKU-1", 2, 500)]))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // Self-read's order is written by its projector, a second consumer.
    let consumers = if mode == Mode::SelfRead { 2 } else { 1 };
    let spans = eventually(
        "every span of the order's trace",
        Duration::from_secs(30),
        || {
            // Each service exports on its own schedule, in batches: wait
            // for every span the chain has.
            let spans = receiver.trace(&trace_id);
            let named = |name: &str| spans.iter().filter(|s| s.name == name).count();
            let complete = named("process OrderPlaced") == consumers
                && ["POST /orders", "place order", "publish OrderPlaced"]
                    .into_iter()
                    .all(|name| named(name) > 0);
            async move { complete.then_some(spans) }
        },
    )
    .await;

    let request = one(&spans, "order-service", "POST /orders");
    assert_eq!(request.kind, Kind::Server);
    assert_eq!(
        request.parent_span_id, client_span,
        "continues the client's span"
    );
    let write = one(&spans, "order-service", "place order");
    assert_eq!(write.parent_span_id, request.span_id);
    let publish = one(&spans, "order-service", "publish OrderPlaced");
    assert_eq!(publish.kind, Kind::Producer);
    assert_eq!(
        publish.parent_span_id, write.span_id,
        "{mode:?}: publish under the write"
    );
    let credit = one(&spans, "rewards-service", "process OrderPlaced");
    assert_eq!(credit.kind, Kind::Consumer);
    assert_eq!(
        credit.parent_span_id, publish.span_id,
        "{mode:?}: credit under the publish"
    );
    assert_eq!(
        credit.attributes.get("messaging.message.id"),
        publish.attributes.get("messaging.message.id"),
    );
    if mode == Mode::SelfRead {
        let projection = one(&spans, "order-service", "process OrderPlaced");
        assert_eq!(projection.parent_span_id, publish.span_id);
    }

    // The request's log lines carry its trace and its span.
    let request_lines: Vec<Value> = env
        .log()
        .lines()
        .iter()
        .filter_map(|line| line.split_once("] ").map(|(_, text)| text))
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .filter(|line| line["trace_id"] == trace_id.as_str())
        .collect();
    let finished = request_lines
        .iter()
        .find(|line| line["fields"]["message"] == "finished processing request")
        .unwrap_or_else(|| panic!("no log line of the request in its trace: {request_lines:?}"));
    assert_eq!(finished["span_id"], request.span_id.as_str(), "{finished}");
}

/// The one span `name` from `service` in the trace.
fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service} {name:?} in {spans:#?}");
    found[0]
}
