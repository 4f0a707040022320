//! The benchmark's results as Markdown tables and an SVG chart.

use std::fmt::Write as _;

use super::Report;
use super::topology::{Topology, TopologyReport};

impl Report {
    /// The results as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{} s at full speed then {} s at half load per mode, {} clients, {} cores, PostgreSQL with fsync on.\n\n",
            self.duration_secs,
            self.duration_secs / 2.0,
            self.concurrency,
            self.cores
        );
        out.push_str("| mode | baseline tx/s (sqlx / pgbench) | placed → credited /s | × sqlx / × pgbench | cost vs dual-write | HTTP p50 / p99 ms | lag p50 / p99 / max ms (at /s) | publish p50 / p99 ms | RSS order / rewards MiB |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let cost = r
                .cost_vs_dual_write
                .map_or_else(|| "—".to_owned(), |c| format!("{:+.0} %", c * 100.0));
            let _ = writeln!(
                out,
                "| {} | {:.0} / {:.0} | {:.0} | {:.2} / {:.2} | {} | {:.1} / {:.1} | {:.1} / {:.1} / {:.1} ({:.0}) | {:.1} / {:.1} | {:.0} / {:.0} |",
                r.mode,
                r.baseline_tps,
                r.pgbench_tps,
                r.throughput,
                r.ratio_to_baseline,
                r.ratio_to_pgbench,
                cost,
                r.http_p50_ms,
                r.http_p99_ms,
                r.lag_p50_ms,
                r.lag_p99_ms,
                r.lag_max_ms,
                r.half_load_rate,
                r.publish_p50_ms,
                r.publish_p99_ms,
                r.order_service_rss_mib,
                r.rewards_service_rss_mib
            );
        }
        out
    }

    /// Throughput (with the baseline) and lag p99 per mode, as an SVG chart.
    pub fn svg(&self) -> String {
        let (width, height, top, bottom, left) = (900.0, 360.0, 40.0, 60.0, 60.0);
        let panel = (width - 2.0 * left) / 2.0 - 20.0;
        let plot_height = height - top - bottom;
        let n = self.results.len().max(1) as f64;
        let slot = panel / n;
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">placed → credited per second (grey: baseline tx/s)</text>
<text x="{}" y="20" text-anchor="middle" font-size="14">consistency lag p99 at half load (ms)</text>
"#,
            left + panel / 2.0,
            width - left - panel / 2.0
        );
        let max_tps = self
            .results
            .iter()
            .map(|r| r.baseline_tps.max(r.throughput))
            .fold(1.0, f64::max);
        let max_lag = self
            .results
            .iter()
            .map(|r| r.lag_p99_ms)
            .fold(1.0, f64::max);
        for (i, r) in self.results.iter().enumerate() {
            let x = left + i as f64 * slot;
            let base_h = r.baseline_tps / max_tps * plot_height;
            let tps_h = r.throughput / max_tps * plot_height;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d0d0d0"/>
<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3b6ea5"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
                x + slot * 0.1,
                top + plot_height - base_h,
                slot * 0.8,
                base_h,
                x + slot * 0.25,
                top + plot_height - tps_h,
                slot * 0.5,
                tps_h,
                x + slot / 2.0,
                top + plot_height - tps_h - 4.0,
                r.throughput,
                x + slot / 2.0,
                height - bottom + 16.0,
                r.mode
            );
            let lx = width - left - panel + i as f64 * slot;
            let lag_h = r.lag_p99_ms / max_lag * plot_height;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c0504d"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
                lx + slot * 0.25,
                top + plot_height - lag_h,
                slot * 0.5,
                lag_h,
                lx + slot / 2.0,
                top + plot_height - lag_h - 4.0,
                r.lag_p99_ms,
                lx + slot / 2.0,
                height - bottom + 16.0,
                r.mode
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/>
<line x1="{2}" y1="{0}" x2="{3}" y2="{0}" stroke="black"/>
</svg>
"##,
            top + plot_height,
            left + panel,
            width - left - panel,
            width - left
        );
        svg
    }
}

impl TopologyReport {
    /// The results as a Markdown table, a row per mode and topology.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "{} s at full speed per run, {} rounds (the rows forward, then backward), {} clients, {} cores; \
             fresh servers for every run, PostgreSQL with fsync on, every NATS node flushing each write \
             (`sync_interval: always`). Orders/s placed → credited: the mean of the rounds (each round's in brackets).\n\n",
            self.duration_secs, self.rounds, self.concurrency, self.cores
        );
        let _ = writeln!(
            out,
            "| mode | topology | orders/s | × {} | HTTP p99 ms |",
            Topology::ALL[0].label()
        );
        out.push_str("|---|---|---:|---:|---:|\n");
        for r in &self.results {
            let rounds = r
                .round_throughputs
                .iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} ({rounds}) | {:.2} | {:.1} |",
                r.mode,
                r.topology.label(),
                r.throughput,
                r.ratio_to_single,
                r.http_p99_ms
            );
        }
        out
    }
}
