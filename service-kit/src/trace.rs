//! W3C trace context, carried from the request that places an order to the
//! consumers that apply its event, and exported over OTLP.
//!
//! One order is one trace:
//!
//! ```text
//! POST /orders (order-service, server)
//! └─ place order (the pattern's write)
//!    └─ publish OrderPlaced (producer)
//!       └─ process OrderPlaced (consumer: rewards-service's credit, the projector)
//! ```
//!
//! The context crosses each hop as a `traceparent`: the request's header; the
//! outbox row's column, or, in `cdc` mode, a transactional logical decoding
//! message in the order's transaction (the business table stays as it is);
//! the NATS message's header. The span of a relay or a CDC reader publishing
//! a batch cannot have one parent per event, so each event gets a `publish`
//! span of its own, child of the write that stored it.
//!
//! Spans are exported (OTLP over HTTP, protobuf) only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the exporter reads the standard
//! `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, …).
//! Without it, trace ids are still made and passed on — they tie the JSON log
//! lines of one order together — but nothing is recorded.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

/// The header (HTTP and NATS) and the name that carry the context.
pub use shared_events::jetstream::TRACEPARENT;

/// The tracer provider of the process; dropping it flushes what is
/// recorded and not yet exported.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports to `OTEL_EXPORTER_OTLP_ENDPOINT` when it is set and not empty (spans
    /// sampled as their parent was, every root sampled); otherwise records
    /// nothing but still makes and passes on trace ids.
    pub(crate) fn new(service: &'static str) -> anyhow::Result<Self> {
        let set = |name| std::env::var_os(name).is_some_and(|value| !value.is_empty());
        let exporting =
            set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
        provider = if exporting {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|e| anyhow::anyhow!("setting up the OTLP exporter: {e}"))?;
            provider
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_batch_exporter(exporter)
        } else {
            provider.with_sampler(Sampler::AlwaysOff)
        };
        let provider = provider.build();
        global::set_tracer_provider(provider.clone());
        Ok(Self { provider })
    }

    /// The tracer the `tracing` spans are recorded with.
    pub(crate) fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        use opentelemetry::trace::TracerProvider as _;
        self.provider.tracer("order-events")
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("exporting the last spans failed: {error}");
        }
    }
}

/// The context `traceparent` names; an empty one (a new trace follows) when
/// there is none or it is malformed.
pub fn context_from(traceparent: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    TraceContextPropagator::new().extract(&OneHeader(traceparent))
}

/// The `traceparent` of `context`, if it holds a valid span.
pub fn traceparent(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut Carrier(&mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the current `tracing` span.
pub fn current_traceparent() -> Option<String> {
    traceparent(&tracing::Span::current().context())
}

/// The `traceparent` of `span`.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    traceparent(&span.context())
}

/// The span of an HTTP request, continuing the caller's trace when its
/// `traceparent` header names one. Named `METHOD /route`, as OpenTelemetry
/// names server spans.
pub fn http_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| request.uri().path(), |path| path.as_str());
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
    );
    let parent = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    if parent.is_some() {
        // Only fails when no OpenTelemetry layer is installed (unit tests).
        let _ = span.set_parent(context_from(parent));
    }
    span
}

/// The span of publishing one event on the request path (self-read, the
/// dual write), child of the current span.
pub fn publish_span(subject: &str, event_id: Uuid) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = "publish OrderPlaced",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = subject,
        messaging.message.id = %event_id,
    )
}

/// Spans of events published in a batch by a relay or a CDC reader: one
/// per event, child of the write that stored it, ended when the batch's
/// answers are in.
pub struct PublishSpans(Vec<global::BoxedSpan>);

impl PublishSpans {
    /// Starts a span for each event, child of the context in its
    /// `traceparent` (the write's), and puts the span's own context in its
    /// place: the header the consumers continue from.
    pub fn start(events: &mut [shared_events::jetstream::Outgoing]) -> Self {
        let tracer = global::tracer("order-events");
        let spans = events
            .iter_mut()
            .map(|event| {
                let parent = context_from(event.traceparent.as_deref());
                let span = tracer
                    .span_builder("publish OrderPlaced")
                    .with_kind(SpanKind::Producer)
                    .with_attributes([
                        KeyValue::new("messaging.system", "nats"),
                        KeyValue::new("messaging.destination.name", event.subject.clone()),
                        KeyValue::new("messaging.message.id", event.event_id.to_string()),
                    ])
                    .start_with_context(&tracer, &parent);
                let context = Context::new().with_remote_span_context(span.span_context().clone());
                event.traceparent = traceparent(&context);
                span
            })
            .collect();
        Self(spans)
    }

    /// Ends every span, marked failed when `outcome` is an error.
    pub fn end_with<T, E: std::fmt::Display>(self, outcome: &Result<T, E>) {
        self.end(outcome.as_ref().err().map(|e| e as &dyn std::fmt::Display));
    }

    /// Ends every span, marked failed with `error` when there is one.
    pub fn end(self, error: Option<&dyn std::fmt::Display>) {
        for mut span in self.0 {
            if let Some(error) = error {
                span.set_status(Status::error(error.to_string()));
            }
            span.end();
        }
    }
}

/// A consumer's span for one event, child of the publish span named by the
/// message's `traceparent` header; without one (a message republished by
/// the audit or a mode switch) it starts a trace of its own.
pub fn process_span(
    consumer: &'static str,
    event_id: Option<Uuid>,
    traceparent: Option<&str>,
) -> global::BoxedSpan {
    let tracer = global::tracer("order-events");
    let mut attributes = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.consumer.group.name", consumer),
    ];
    if let Some(event_id) = event_id {
        attributes.push(KeyValue::new("messaging.message.id", event_id.to_string()));
    }
    tracer
        .span_builder("process OrderPlaced")
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes)
        .start_with_context(&tracer, &context_from(traceparent))
}

/// A carrier holding only a `traceparent`.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct Carrier<'a>(&'a mut HashMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_as_it_was_written() {
        let written = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_from(Some(written));
        assert_eq!(traceparent(&context).as_deref(), Some(written));
    }

    #[test]
    fn a_malformed_traceparent_starts_no_trace() {
        for malformed in ["", "00-xyz-00f067aa0ba902b7-01", "garbage"] {
            assert_eq!(
                traceparent(&context_from(Some(malformed))),
                None,
                "{malformed}"
            );
        }
        assert_eq!(traceparent(&context_from(None)), None);
    }
}
