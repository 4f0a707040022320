//! The benchmark's results as Markdown tables.

use std::fmt::Write as _;

use super::Report;
use super::topology::{Topology, TopologyReport};

impl Report {
    /// The results as Markdown tables: full speed, half load, CPU time per
    /// 1,000 orders, and memory.
    pub fn markdown(&self) -> String {
        let f = Format {
            spread: self.runs_per_mode > 1,
        };
        let runs = if self.runs_per_mode == 1 {
            "1 run of each mode".to_owned()
        } else {
            format!(
                "{} runs of each mode (interleaved: every mode once per round, forward, then backward); \
                 each figure is the median of the runs, with their min–max in brackets, and a ratio is \
                 the median of the per-run ratios",
                self.runs_per_mode
            )
        };
        let mut out = format!(
            "{} s at full speed then {} s at half load per run, {runs}. {} clients, {} cores, \
             fresh servers for every run, PostgreSQL with fsync on.\n\n",
            self.duration_secs,
            self.duration_secs / 2.0,
            self.concurrency,
            self.cores
        );

        out.push_str(
            "**Full speed**: the baselines run the mode's write straight into PostgreSQL; \
             placed → credited is the services' throughput; HTTP latencies are `POST /orders`'s.\n\n",
        );
        out.push_str("| mode | sqlx baseline tx/s | pgbench tx/s | placed → credited /s | × sqlx | × pgbench | cost vs dual-write | HTTP p50 ms | HTTP p99 ms |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let (m, s) = (&r.median, &r.spread);
            let cost = match (m.cost_vs_dual_write, s.cost_vs_dual_write) {
                (Some(median), Some(spread)) => f.percent(median, spread),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {cost} | {} | {} |",
                r.mode,
                f.figure(m.baseline_tps, s.baseline_tps, 0),
                f.figure(m.pgbench_tps, s.pgbench_tps, 0),
                f.figure(m.throughput, s.throughput, 0),
                f.figure(m.ratio_to_baseline, s.ratio_to_baseline, 2),
                f.figure(m.ratio_to_pgbench, s.ratio_to_pgbench, 2),
                f.figure(m.http_p50_ms, s.http_p50_ms, 1),
                f.figure(m.http_p99_ms, s.http_p99_ms, 1),
            );
        }

        out.push_str(
            "\n**Half load**: consistency lag, order committed or accepted → reward committed \
             (both stamped by PostgreSQL's clock); publish lag, order → stored in JetStream.\n\n",
        );
        out.push_str("| mode | orders/s | lag p50 ms | lag p99 ms | lag max ms | publish p50 ms | publish p99 ms |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let (m, s) = (&r.median, &r.spread);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.mode,
                f.figure(m.half_load_rate, s.half_load_rate, 0),
                f.figure(m.lag_p50_ms, s.lag_p50_ms, 1),
                f.figure(m.lag_p99_ms, s.lag_p99_ms, 1),
                f.figure(m.lag_max_ms, s.lag_max_ms, 1),
                f.figure(m.publish_p50_ms, s.publish_p50_ms, 1),
                f.figure(m.publish_p99_ms, s.publish_p99_ms, 1),
            );
        }

        let _ = write!(
            out,
            "\n**CPU seconds per 1,000 orders at full speed**, from placing the first order to the last \
             credit: user + system time from `/proc` ({} ticks a second). PostgreSQL is the postmaster \
             and every backend and worker it ran; the load generator is the benchmark process (the HTTP \
             clients, and the reads that wait for the credits). *Available* is the cores × the phase's \
             wall time: what the total leaves of it is idle, kernel work no process is charged for, or \
             other work on the machine.\n\n",
            self.clock_ticks_per_second
        );
        out.push_str("| mode | order-service | rewards-service | PostgreSQL | nats-server | load generator | total | available |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.results {
            let (m, s) = (
                &r.median.cpu_seconds_per_1000_orders,
                &r.spread.cpu_seconds_per_1000_orders,
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.mode,
                f.figure(m.order_service, s.order_service, 2),
                f.figure(m.rewards_service, s.rewards_service, 2),
                f.figure(m.postgres, s.postgres, 2),
                f.figure(m.nats_server, s.nats_server, 2),
                f.figure(m.load_generator, s.load_generator, 2),
                f.figure(
                    r.median.cpu_seconds_per_1000_orders_total,
                    r.spread.cpu_seconds_per_1000_orders_total,
                    2
                ),
                f.figure(
                    r.median.cpu_seconds_available_per_1000_orders,
                    r.spread.cpu_seconds_available_per_1000_orders,
                    2
                ),
            );
        }

        out.push_str(
            "\n**The broker's own limit**, events stored and acknowledged per second on the \
             same nats-server, into a stream of its own, before the services start: single \
             publishes with 256 awaiting their PubAck, and atomic batches of 100 and of 500 \
             (one at a time). Every pattern publishes through one of these ways.\n\n",
        );
        out.push_str("| mode | single, pipelined | batches of 100 | batches of 500 |\n");
        out.push_str("|---|---:|---:|---:|\n");
        for r in &self.results {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                r.mode,
                f.figure(
                    r.median.broker_single_per_s,
                    r.spread.broker_single_per_s,
                    0
                ),
                f.figure(
                    r.median.broker_batch_100_per_s,
                    r.spread.broker_batch_100_per_s,
                    0
                ),
                f.figure(
                    r.median.broker_batch_500_per_s,
                    r.spread.broker_batch_500_per_s,
                    0
                ),
            );
        }

        out.push_str("\n**Peak RSS** (`VmHWM`), MiB.\n\n");
        out.push_str("| mode | order-service | rewards-service |\n");
        out.push_str("|---|---:|---:|\n");
        for r in &self.results {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                r.mode,
                f.figure(
                    r.median.order_service_rss_mib,
                    r.spread.order_service_rss_mib,
                    0
                ),
                f.figure(
                    r.median.rewards_service_rss_mib,
                    r.spread.rewards_service_rss_mib,
                    0
                ),
            );
        }
        out
    }
}

/// How the tables write a figure.
pub(super) struct Format {
    /// Whether to write the min–max beside the median (not for one run,
    /// where both are the median).
    pub(super) spread: bool,
}

impl Format {
    /// `2,067 (1,980–2,120)`: a median and its min–max, to `decimals` places.
    pub(super) fn figure(&self, median: f64, [min, max]: [f64; 2], decimals: usize) -> String {
        let median = thousands(median, decimals);
        if !self.spread {
            return median;
        }
        let (min, max) = (thousands(min, decimals), thousands(max, decimals));
        // A dash between negative numbers would read as a minus.
        if min.starts_with('-') || max.starts_with('-') {
            format!("{median} ({min} to {max})")
        } else {
            format!("{median} ({min}–{max})")
        }
    }

    /// A fraction as a signed percentage: `-16 % (-21 to -12 %)`.
    fn percent(&self, median: f64, [min, max]: [f64; 2]) -> String {
        let median = format!("{:+.0} %", median * 100.0);
        if !self.spread {
            return median;
        }
        format!("{median} ({:+.0} to {:+.0} %)", min * 100.0, max * 100.0)
    }
}

/// `value` to `decimals` places, with a comma between thousands.
pub(super) fn thousands(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
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

#[cfg(test)]
mod tests {
    use super::{Format, thousands};

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(2067.4, 0), "2,067");
        assert_eq!(thousands(1234567.891, 2), "1,234,567.89");
        assert_eq!(thousands(999.0, 0), "999");
        assert_eq!(thousands(-16234.0, 0), "-16,234");
        assert_eq!(thousands(0.123, 2), "0.12");
    }

    #[test]
    fn a_figure_carries_its_spread_when_there_is_one() {
        let three_runs = Format { spread: true };
        assert_eq!(
            three_runs.figure(2067.0, [1980.0, 2120.0], 0),
            "2,067 (1,980–2,120)"
        );
        assert_eq!(
            three_runs.figure(-1.5, [-2.0, 1.0], 1),
            "-1.5 (-2.0 to 1.0)"
        );
        assert_eq!(
            three_runs.percent(-0.16, [-0.21, 0.05]),
            "-16 % (-21 to +5 %)"
        );
        let one_run = Format { spread: false };
        assert_eq!(one_run.figure(2067.0, [2067.0, 2067.0], 0), "2,067");
    }
}
