//! One run of one mode on fresh private servers, phase after phase (see
//! the [benchmark's comment](super)): the baselines, the full speed with
//! the CPU time each process spends, the half load with its lags, and the
//! services' peak memory.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::env::{Private, TestEnv};
use harness::service::Service;
use sqlx::PgPool;

use super::baseline::{baseline, pgbench, writes_outbox};
use super::figures::{Figures, percentiles};
use super::load::{drive, full_speed, wait_until_credited};
use super::{BenchConfig, BenchMode, broker, cores, cpu, progress};

/// One run of `mode` on fresh servers; `label` names it in the progress
/// lines.
pub(super) async fn run_mode(
    mode: BenchMode,
    config: &BenchConfig,
    label: &str,
    ticks_per_second: f64,
) -> anyhow::Result<Figures<f64>> {
    let env = TestEnv::with_private(
        &format!("bench_{}", mode.name().replace('-', "_")),
        Private {
            nats: true,
            postgres: true,
            durable: true,
        },
    )
    .await;

    progress(
        label,
        "baseline: the write transaction straight into PostgreSQL",
    );
    let baseline_url = env.create_database("baseline").await;
    let baseline_tps = baseline(&baseline_url, config, writes_outbox(mode)).await?;
    progress(label, "baseline: the same statement from pgbench");
    let pgbench_url = env.create_database("baseline_pgbench").await;
    let pgbench_tps = pgbench(&pgbench_url, config, writes_outbox(mode)).await?;
    progress(label, "baseline: the broker's own limit");
    let broker = broker::limits(
        env.nats_url(),
        (config.duration / 5).max(Duration::from_secs(1)),
    )
    .await
    .context("measuring the broker's limit")?;

    let orders = env.order_service(mode).start().await;
    let rewards = env.rewards_service().start().await;
    let rewards_db = env.rewards_db().await;
    let urls = [orders.url().to_owned()];

    let watched = cpu::Watched {
        order_service: orders.pid().context("order-service has exited")?,
        rewards_service: rewards.pid().context("rewards-service has exited")?,
        postmaster: env.postgres_pid().context("PostgreSQL is not running")?,
        nats_server: env.nats_pid().context("nats-server is not running")?,
    };
    let cpu_before = watched.ticks()?;
    let phase_started = Instant::now();
    let (full, throughput) = full_speed(&env, &urls, &rewards_db, config, label).await?;
    let cpu_used = watched.ticks()? - cpu_before;
    let phase_secs = phase_started.elapsed().as_secs_f64();
    let per_1000_orders = |seconds: f64| seconds / full.placed.max(1) as f64 * 1000.0;
    let cpu = cpu_used.map(|ticks| per_1000_orders(ticks as f64 / ticks_per_second));

    let rate = (throughput / 2.0).max(1.0);
    let half_start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&rewards_db)
        .await?;
    let half = drive(
        &env,
        &urls,
        config.concurrency,
        config.duration / 2,
        Some(rate),
        label,
        "half load",
    )
    .await;
    wait_until_credited(&rewards_db, full.placed + half.placed, label).await?;
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM credited_at - order_placed_at)::float8 * 1000
         FROM reward_ledger WHERE kind = 'credit' AND order_placed_at >= $1",
    )
    .bind(half_start)
    .fetch_all(&rewards_db)
    .await?;
    let [lag_p50_ms, lag_p99_ms, lag_max_ms] = percentiles(&lags, [0.5, 0.99, 1.0]);
    let publish = publish_lags(&env, &rewards_db, half_start).await?;
    let [publish_p50_ms, publish_p99_ms] = percentiles(&publish, [0.5, 0.99]);
    let [http_p50_ms, http_p99_ms] = percentiles(&full.latencies_ms, [0.5, 0.99]);

    let figures = Figures {
        baseline_tps,
        pgbench_tps,
        broker_single_per_s: broker.single_pipelined_per_s,
        broker_batch_100_per_s: broker.batch_100_per_s.unwrap_or(0.0),
        broker_batch_500_per_s: broker.batch_500_per_s.unwrap_or(0.0),
        orders: full.placed as f64,
        throughput,
        ratio_to_baseline: throughput / baseline_tps,
        ratio_to_pgbench: throughput / pgbench_tps,
        cost_vs_dual_write: None,
        http_p50_ms,
        http_p99_ms,
        half_load_rate: rate,
        half_load_orders: half.placed as f64,
        lag_p50_ms,
        lag_p99_ms,
        lag_max_ms,
        publish_p50_ms,
        publish_p99_ms,
        order_service_rss_mib: peak_rss_mib(&orders),
        rewards_service_rss_mib: peak_rss_mib(&rewards),
        cpu_seconds_per_1000_orders: cpu,
        cpu_seconds_per_1000_orders_total: cpu.total(),
        cpu_seconds_available_per_1000_orders: per_1000_orders(phase_secs * cores() as f64),
    };
    progress(
        label,
        &format!(
            "{:.0} orders/s placed → credited ({:.2} × the sqlx baseline of {:.0} tps, {:.2} × pgbench's {:.0} tps); lag p99 {:.1} ms at {:.0}/s",
            figures.throughput,
            figures.ratio_to_baseline,
            figures.baseline_tps,
            figures.ratio_to_pgbench,
            figures.pgbench_tps,
            figures.lag_p99_ms,
            rate
        ),
    );
    progress(
        label,
        &format!(
            "CPU s per 1,000 orders at full speed: order-service {:.2}, rewards-service {:.2}, \
             PostgreSQL {:.2}, nats-server {:.2}, load generator {:.2}; {:.2} of the {:.2} the cores had",
            cpu.order_service,
            cpu.rewards_service,
            cpu.postgres,
            cpu.nats_server,
            cpu.load_generator,
            figures.cpu_seconds_per_1000_orders_total,
            figures.cpu_seconds_available_per_1000_orders
        ),
    );
    Ok(figures)
}

/// Order placed (committed or accepted) → stored in JetStream, in ms, for
/// the orders of the half-load phase.
async fn publish_lags(
    env: &TestEnv,
    rewards_db: &PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT stream_sequence, order_placed_at FROM reward_ledger
         WHERE kind = 'credit' AND order_placed_at >= $1",
    )
    .bind(since)
    .fetch_all(rewards_db)
    .await?;
    let names = shared_events::Names::new(env.events_prefix())?;
    let stream = env.jetstream().await.get_stream(names.stream()).await?;
    let mut lags = Vec::with_capacity(rows.len());
    for (sequence, placed_at) in rows {
        let message = stream.get_raw_message(u64::try_from(sequence)?).await?;
        let stored = shared_events::jetstream::stored_at(message.time.unix_timestamp_nanos());
        lags.push((stored - placed_at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    Ok(lags)
}

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib(service: &Service) -> f64 {
    service
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
