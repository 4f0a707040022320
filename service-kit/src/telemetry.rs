use std::io::IsTerminal as _;

use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;
use tracing_subscriber::EnvFilter;

/// Logs to stdout, filtered by `RUST_LOG` (default `info`), as `LOG_FORMAT`
/// says: `text` (the default; coloured only on a terminal) or `json`, one
/// object per line with its timestamp, level, target, fields, and the span
/// it happened in with that span's parents. Any other value is refused,
/// before anything else starts.
pub fn init_tracing() -> anyhow::Result<()> {
    let json = match std::env::var("LOG_FORMAT").as_deref() {
        Err(_) | Ok("text") => false,
        Ok("json") => true,
        Ok(other) => anyhow::bail!("LOG_FORMAT={other:?}: use text or json"),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        logs.with_ansi(std::io::stdout().is_terminal()).init();
    }
    Ok(())
}

/// Installs the process-wide Prometheus recorder; the handle renders `/metrics`.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the Prometheus recorder: {e}"))
}

/// Counts PubAcks under `source`: `events_published_total` for each
/// (duplicates included, as it happened) and
/// `events_publish_duplicates_total` for those the stream already had.
pub fn count_published(source: &'static str, new: u64, duplicates: u64) {
    metrics::counter!("events_published_total", "source" => source).increment(new + duplicates);
    metrics::counter!("events_publish_duplicates_total", "source" => source).increment(duplicates);
}
