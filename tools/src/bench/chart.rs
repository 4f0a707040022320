//! The benchmark's results as an SVG chart.

use std::fmt::Write as _;

use super::Report;

impl Report {
    /// Throughput (with the sqlx baseline) and lag p99 per mode, as an SVG
    /// chart: the medians as bars, each run's min–max as a line across.
    pub fn svg(&self) -> String {
        let (width, height, top, bottom, left) = (900.0, 360.0, 40.0, 60.0, 60.0);
        let panel = (width - 2.0 * left) / 2.0 - 20.0;
        let plot_height = height - top - bottom;
        let n = self.results.len().max(1) as f64;
        let slot = panel / n;
        let runs = if self.runs_per_mode > 1 {
            format!(", median of {} runs", self.runs_per_mode)
        } else {
            String::new()
        };
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">placed → credited per second{runs} (grey: baseline tx/s)</text>
<text x="{}" y="20" text-anchor="middle" font-size="14">consistency lag p99 at half load (ms){runs}</text>
"#,
            left + panel / 2.0,
            width - left - panel / 2.0
        );
        let max_tps = self
            .results
            .iter()
            .map(|r| r.median.baseline_tps.max(r.spread.throughput[1]))
            .fold(1.0, f64::max);
        let max_lag = self
            .results
            .iter()
            .map(|r| r.spread.lag_p99_ms[1])
            .fold(1.0, f64::max);
        // A bar's height, and the y of a value, on a scale up to `max`.
        let height_of = |value: f64, max: f64| value / max * plot_height;
        let y_of = |value: f64, max: f64| top + plot_height - height_of(value, max);
        // One run has no spread to draw.
        let spread = |x: f64, y_min: f64, y_max: f64| {
            if self.runs_per_mode > 1 {
                whisker(x, y_min, y_max)
            } else {
                String::new()
            }
        };
        for (i, r) in self.results.iter().enumerate() {
            let (m, s) = (&r.median, &r.spread);
            let x = left + i as f64 * slot;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#d0d0d0"/>
<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3b6ea5"/>
{}<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
                x + slot * 0.1,
                y_of(m.baseline_tps, max_tps),
                slot * 0.8,
                height_of(m.baseline_tps, max_tps),
                x + slot * 0.25,
                y_of(m.throughput, max_tps),
                slot * 0.5,
                height_of(m.throughput, max_tps),
                spread(
                    x + slot / 2.0,
                    y_of(s.throughput[0], max_tps),
                    y_of(s.throughput[1], max_tps)
                ),
                x + slot / 2.0,
                y_of(s.throughput[1].max(m.throughput), max_tps) - 4.0,
                m.throughput,
                x + slot / 2.0,
                height - bottom + 16.0,
                r.mode
            );
            let lx = width - left - panel + i as f64 * slot;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#c0504d"/>
{}<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1}</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
                lx + slot * 0.25,
                y_of(m.lag_p99_ms, max_lag),
                slot * 0.5,
                height_of(m.lag_p99_ms, max_lag),
                spread(
                    lx + slot / 2.0,
                    y_of(s.lag_p99_ms[0], max_lag),
                    y_of(s.lag_p99_ms[1], max_lag)
                ),
                lx + slot / 2.0,
                y_of(s.lag_p99_ms[1].max(m.lag_p99_ms), max_lag) - 4.0,
                m.lag_p99_ms,
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

/// A vertical line from `y_min` to `y_max` at `x`, with short caps: the
/// runs' min–max over a bar.
fn whisker(x: f64, y_min: f64, y_max: f64) -> String {
    let cap = 4.0;
    format!(
        r##"<path d="M{x:.1} {y_min:.1} V{y_max:.1} M{:.1} {y_min:.1} H{:.1} M{:.1} {y_max:.1} H{:.1}" stroke="black" fill="none"/>
"##,
        x - cap,
        x + cap,
        x - cap,
        x + cap
    )
}
