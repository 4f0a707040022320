//! What a run measured ([`Figures`]), and the statistics that sum up runs:
//! the median and the min–max of each figure over a mode's runs, and the
//! percentiles of the latencies and lags within a run, from an hdrhistogram.

use serde::Serialize;

use super::cpu::Processes;

/// A mode's figures: of one run, or a statistic of each over the runs
/// (`f64` for the median, `[min, max]` for the spread). Latencies in
/// milliseconds, memory in MiB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures<T> {
    /// The mode's write from sqlx, as order-service issues it.
    pub baseline_tps: T,
    /// The same statement run by pgbench (a C client) at the same
    /// concurrency against the same server: the database's own limit.
    pub pgbench_tps: T,
    /// The broker's own limit on the same server ([`broker`]), events/s:
    /// single publishes pipelined, and atomic batches of 100 and of 500
    /// (0 where the server takes no atomic batches).
    pub broker_single_per_s: T,
    pub broker_batch_100_per_s: T,
    pub broker_batch_500_per_s: T,
    /// Orders placed at full speed.
    pub orders: T,
    /// Orders per second at full speed, placed → credited.
    pub throughput: T,
    pub ratio_to_baseline: T,
    pub ratio_to_pgbench: T,
    /// 1 − throughput / dual-write's throughput in the same round, when
    /// dual-write ran too.
    pub cost_vs_dual_write: Option<T>,
    /// `POST /orders` at full speed.
    pub http_p50_ms: T,
    pub http_p99_ms: T,
    pub half_load_rate: T,
    pub half_load_orders: T,
    pub lag_p50_ms: T,
    pub lag_p99_ms: T,
    pub lag_max_ms: T,
    pub publish_p50_ms: T,
    pub publish_p99_ms: T,
    pub order_service_rss_mib: T,
    pub rewards_service_rss_mib: T,
    /// CPU seconds each process used in the full-speed phase (placing, then
    /// waiting for the last credit), per 1,000 orders placed.
    pub cpu_seconds_per_1000_orders: Processes<T>,
    /// Their sum.
    pub cpu_seconds_per_1000_orders_total: T,
    /// What the machine had to give in that phase: its cores × the phase's
    /// wall time, per 1,000 orders. The total's shortfall is idle time,
    /// work no process is charged for (softirq), and other work on the
    /// machine.
    pub cpu_seconds_available_per_1000_orders: T,
}

impl Figures<f64> {
    /// Each figure's `stat` over `runs`.
    pub(super) fn over_runs<T>(runs: &[&Figures<f64>], stat: impl Fn(Vec<f64>) -> T) -> Figures<T> {
        let of = |figure: fn(&Figures<f64>) -> f64| stat(runs.iter().map(|r| figure(r)).collect());
        let cpu = |process: fn(&Processes<f64>) -> f64| {
            stat(
                runs.iter()
                    .map(|r| process(&r.cpu_seconds_per_1000_orders))
                    .collect(),
            )
        };
        Figures {
            baseline_tps: of(|f| f.baseline_tps),
            pgbench_tps: of(|f| f.pgbench_tps),
            broker_single_per_s: of(|f| f.broker_single_per_s),
            broker_batch_100_per_s: of(|f| f.broker_batch_100_per_s),
            broker_batch_500_per_s: of(|f| f.broker_batch_500_per_s),
            orders: of(|f| f.orders),
            throughput: of(|f| f.throughput),
            ratio_to_baseline: of(|f| f.ratio_to_baseline),
            ratio_to_pgbench: of(|f| f.ratio_to_pgbench),
            // Only when every run had a control to compare with.
            cost_vs_dual_write: runs
                .iter()
                .map(|r| r.cost_vs_dual_write)
                .collect::<Option<Vec<f64>>>()
                .map(&stat),
            http_p50_ms: of(|f| f.http_p50_ms),
            http_p99_ms: of(|f| f.http_p99_ms),
            half_load_rate: of(|f| f.half_load_rate),
            half_load_orders: of(|f| f.half_load_orders),
            lag_p50_ms: of(|f| f.lag_p50_ms),
            lag_p99_ms: of(|f| f.lag_p99_ms),
            lag_max_ms: of(|f| f.lag_max_ms),
            publish_p50_ms: of(|f| f.publish_p50_ms),
            publish_p99_ms: of(|f| f.publish_p99_ms),
            order_service_rss_mib: of(|f| f.order_service_rss_mib),
            rewards_service_rss_mib: of(|f| f.rewards_service_rss_mib),
            cpu_seconds_per_1000_orders: Processes {
                order_service: cpu(|p| p.order_service),
                rewards_service: cpu(|p| p.rewards_service),
                postgres: cpu(|p| p.postgres),
                nats_server: cpu(|p| p.nats_server),
                load_generator: cpu(|p| p.load_generator),
            },
            cpu_seconds_per_1000_orders_total: of(|f| f.cpu_seconds_per_1000_orders_total),
            cpu_seconds_available_per_1000_orders: of(|f| f.cpu_seconds_available_per_1000_orders),
        }
    }
}

/// The median of `values`: the middle one, or the mean of the two middle
/// ones when there is an even number of them.
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The smallest and the largest of `values`.
pub(super) fn min_max(values: Vec<f64>) -> [f64; 2] {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        [0.0, 0.0]
    } else {
        [min, max]
    }
}

/// The `quantiles` of `values_ms`, from an hdrhistogram to three
/// significant digits of a microsecond (0 when there are no values). Every
/// percentile of the report is computed here, the HTTP latencies measured
/// by the clients as well as the lags read from the databases.
pub(super) fn percentiles<const N: usize>(values_ms: &[f64], quantiles: [f64; N]) -> [f64; N] {
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits are supported");
    for value in values_ms {
        // A lag measured across two clocks can come out a hair below zero.
        let micros = (value * 1000.0).max(0.0) as u64;
        // The histogram grows to fit; only a value past i64::MAX is refused.
        histogram
            .record(micros)
            .expect("a benchmark time fits the histogram");
    }
    quantiles.map(|q| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1000.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{median, min_max, percentiles};

    #[test]
    fn percentiles_are_within_a_thousandth_of_the_exact_rank() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let exact = [500.0, 990.0, 1000.0];
        let got = percentiles(&values, [0.5, 0.99, 1.0]);
        for (got, exact) in got.into_iter().zip(exact) {
            assert!((got - exact).abs() <= exact / 1000.0, "{got} vs {exact}");
        }
        assert_eq!(percentiles(&[], [0.5]), [0.0]);
        assert_eq!(percentiles(&[-0.2], [0.5]), [0.0]);
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(min_max(vec![3.0, 1.0, 2.0]), [1.0, 3.0]);
        assert_eq!(min_max(vec![7.0]), [7.0, 7.0]);
    }
}
