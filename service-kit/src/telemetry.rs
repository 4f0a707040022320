use std::io::IsTerminal as _;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::trace::TraceContextExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{self, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::meters;
use crate::trace::Traces;

/// Logs to stdout, filtered by `RUST_LOG` (default `info`), as `LOG_FORMAT`
/// says: `text` (the default; coloured only on a terminal) or `json`, one
/// object per line with its timestamp, level, target, fields, the span it
/// happened in with that span's parents, and the `trace_id` and `span_id`
/// of that span. Any other value is refused, before anything else starts.
///
/// Spans the filter lets through are also traces ([`crate::trace`]),
/// exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the returned
/// [`Traces`] until the end of `main`: dropping it exports the last spans.
pub fn init(service: &'static str) -> anyhow::Result<Traces> {
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Err(_) | Ok("text") => false,
        Ok("json") => true,
        Ok(other) => anyhow::bail!("LOG_FORMAT={other:?}: use text or json"),
    };
    let traces = Traces::new(service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = tracing_opentelemetry::layer()
        .with_tracer(traces.tracer())
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false);
    let registry = tracing_subscriber::registry().with(filter).with(spans);
    if json {
        let format = fmt::format()
            .json()
            .with_current_span(true)
            .with_span_list(true);
        registry
            .with(
                fmt::layer()
                    .event_format(WithTraceIds(format))
                    .fmt_fields(fmt::format::JsonFields::new()),
            )
            .init();
    } else {
        registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .init();
    }
    Ok(traces)
}

/// A JSON line format that adds the `trace_id` and `span_id` of the span an
/// event happened in, so that the lines of one order can be found by its
/// trace.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let span = ctx.event_scope().and_then(|mut scope| scope.next());
        let context = span.and_then(|span| {
            tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
            })
        });
        let ids = context
            .map(|context| context.span().span_context().clone())
            .filter(|ids| ids.is_valid());
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let object = line.trim_end().strip_suffix('}').ok_or(std::fmt::Error)?;
        writeln!(
            writer,
            r#"{object},"trace_id":"{}","span_id":"{}"}}"#,
            ids.trace_id(),
            ids.span_id()
        )
    }
}

/// Installs the process-wide Prometheus recorder with the HELP text of
/// every metric; the handle renders `/metrics`.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(meters::DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Suffix("_batch_size".into()),
            meters::BATCH_SIZE_BUCKETS,
        )?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the Prometheus recorder: {e}"))?;
    meters::describe();
    process_metrics().describe();
    Ok(handle)
}

/// The process's own metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, open file descriptors, threads, …),
/// read at each scrape.
pub fn process_metrics() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}
