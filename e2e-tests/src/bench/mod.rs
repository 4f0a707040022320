//! The benchmark: what consistency costs in each mode, and how stale
//! rewards-service gets, as ratios to limits measured in the same run.
//!
//! For each mode, on fresh private servers (PostgreSQL with fsync ON):
//! 1. **Baseline**: the mode's own write transaction (order + lines, plus the
//!    outbox row where the mode writes one) issued directly against the same
//!    PostgreSQL at the same concurrency, for the same time.
//! 2. **Full speed**: `concurrency` clients `POST /orders` as fast as they can;
//!    then the run waits until every placed order is credited.
//!    Throughput = orders / (last credit − first order), placed → credited.
//! 3. **Half load**: an open loop at half that throughput, to measure the
//!    consistency lag (order committed or accepted → reward committed, both
//!    stamped by the one PostgreSQL server's clock) and the publish lag
//!    (order → stored in JetStream, both clocks of this machine).
//! 4. Peak RSS of each service (`VmHWM`).
//!
//! [`report`] renders the results as Markdown and as an SVG chart;
//! [`waiters`] measures what `?wait` readers cost the write path;
//! [`topology`] what replication and a second instance cost.

pub mod broker;
mod report;
pub mod topology;
pub mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::api::{count, order};
use crate::env::{Private, TestEnv};
use crate::service::Service;

/// A pattern as the benchmark runs it: the harness's [`Mode`](crate::Mode).
pub use crate::mode::Mode as BenchMode;

impl BenchMode {
    /// Whether the mode's write transaction includes an outbox row.
    fn writes_outbox(self) -> bool {
        matches!(self, BenchMode::Outbox | BenchMode::OutboxCdc)
    }
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub modes: Vec<BenchMode>,
    /// Length of the full-speed phase (and of the baseline); the half-load
    /// phase lasts half of it.
    pub duration: Duration,
    pub concurrency: usize,
}

/// One mode's numbers. Latencies in milliseconds, memory in MiB.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    pub baseline_tps: f64,
    /// The same statement run by pgbench (a C client) at the same
    /// concurrency against the same server: the database's own limit.
    pub pgbench_tps: f64,
    pub orders: u64,
    pub throughput: f64,
    pub ratio_to_baseline: f64,
    pub ratio_to_pgbench: f64,
    /// 1 − throughput / dual-write's throughput, when dual-write ran too.
    pub cost_vs_dual_write: Option<f64>,
    pub http_p50_ms: f64,
    pub http_p99_ms: f64,
    pub half_load_rate: f64,
    pub half_load_orders: u64,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    pub publish_p50_ms: f64,
    pub publish_p99_ms: f64,
    pub order_service_rss_mib: f64,
    pub rewards_service_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub duration_secs: f64,
    pub concurrency: usize,
    pub cores: usize,
    pub results: Vec<ModeResult>,
}

/// Runs every configured mode in turn, reporting progress on stderr.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    let mut results = Vec::new();
    for &mode in &config.modes {
        results.push(
            run_mode(mode, config)
                .await
                .with_context(|| format!("benchmarking {}", mode.name()))?,
        );
    }
    if let Some(control) = results
        .iter()
        .find(|r| r.mode == "dual-write")
        .map(|r| r.throughput)
    {
        for result in &mut results {
            result.cost_vs_dual_write = Some(1.0 - result.throughput / control);
        }
    }
    Ok(Report {
        duration_secs: config.duration.as_secs_f64(),
        concurrency: config.concurrency,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        results,
    })
}

async fn run_mode(mode: BenchMode, config: &BenchConfig) -> anyhow::Result<ModeResult> {
    let name = mode.name();
    let env = TestEnv::with_private(
        &format!("bench_{}", name.replace('-', "_")),
        Private {
            nats: true,
            postgres: true,
            durable: true,
        },
    )
    .await;

    progress(
        name,
        "baseline: the write transaction straight into PostgreSQL",
    );
    let baseline_url = env.create_database("baseline").await;
    let baseline_tps = baseline(&baseline_url, config, mode.writes_outbox()).await?;
    progress(name, "baseline: the same statement from pgbench");
    let pgbench_url = env.create_database("baseline_pgbench").await;
    let pgbench_tps = pgbench(&pgbench_url, config, mode.writes_outbox()).await?;

    let orders = env.order_service(mode).start().await;
    let rewards = env.rewards_service().start().await;
    let rewards_db = env.rewards_db().await;
    let urls = [orders.url().to_owned()];

    let (full, throughput) = full_speed(&env, &urls, &rewards_db, config, name).await?;

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
        name,
        "half load",
    )
    .await;
    wait_until_credited(&rewards_db, full.placed + half.placed, name).await?;
    let (lag_p50, lag_p99, lag_max): (f64, f64, f64) = sqlx::query_as(
        "SELECT COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0),
                COALESCE(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0),
                COALESCE(max(lag), 0)
         FROM (SELECT EXTRACT(EPOCH FROM credited_at - order_placed_at)::float8 * 1000 AS lag
               FROM reward_ledger WHERE order_placed_at >= $1) AS lags",
    )
    .bind(half_start)
    .fetch_one(&rewards_db)
    .await?;
    let publish = publish_lags(&env, &rewards_db, half_start).await?;

    let result = ModeResult {
        mode: name,
        baseline_tps,
        orders: full.placed,
        throughput,
        ratio_to_baseline: throughput / baseline_tps,
        pgbench_tps,
        ratio_to_pgbench: throughput / pgbench_tps,
        cost_vs_dual_write: None,
        http_p50_ms: percentile(&full.latencies_ms, 0.5),
        http_p99_ms: percentile(&full.latencies_ms, 0.99),
        half_load_rate: rate,
        half_load_orders: half.placed,
        lag_p50_ms: lag_p50,
        lag_p99_ms: lag_p99,
        lag_max_ms: lag_max,
        publish_p50_ms: percentile(&publish, 0.5),
        publish_p99_ms: percentile(&publish, 0.99),
        order_service_rss_mib: peak_rss_mib(&orders),
        rewards_service_rss_mib: peak_rss_mib(&rewards),
    };
    progress(
        name,
        &format!(
            "{:.0} orders/s placed → credited ({:.2} × the sqlx baseline of {:.0} tps, {:.2} × pgbench's {:.0} tps); lag p99 {:.1} ms at {:.0}/s",
            result.throughput,
            result.ratio_to_baseline,
            result.baseline_tps,
            result.ratio_to_pgbench,
            result.pgbench_tps,
            result.lag_p99_ms,
            rate
        ),
    );
    Ok(result)
}

fn progress(mode: &str, message: &str) {
    eprintln!("[bench {mode}] {message}");
}

/// The mode's write as order-service issues it (one statement in
/// autocommit, see `order-service/src/db/orders.rs`), for an order of one
/// line without an idempotency key, as the benchmark's clients place them:
/// the order and its lines, and the outbox row when `$3` is set.
const WRITE: &str = "WITH new_order AS (
        INSERT INTO orders (id, customer_id, currency, total_minor, created_at)
        VALUES ($1, 'c1', 'EUR', 2500, $2) RETURNING id
    ), new_lines AS (
        INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor)
        SELECT new_order.id, line.* FROM new_order,
               UNNEST('{1}'::int[], '{SKU-1}'::text[], '{1}'::bigint[], '{2500}'::bigint[]) AS line
    ), new_event AS (
        INSERT INTO outbox (event_id, subject, payload)
        SELECT $3::uuid, 'orders.placed', $4::jsonb FROM new_order WHERE $3::uuid IS NOT NULL
    )
    SELECT 1";

/// [`WRITE`] as a pgbench script: the customer from the client, the payload
/// from `bench_payload()` (a constant once planned; inline, its colons would
/// read to pgbench as variables), and ids that grow with time, as the service's UUIDv7 do (the
/// microseconds, then a random number: pgbench has no UUIDs, and random ones
/// would spread the inserts over the whole index, which the service's ids
/// never do).
fn pgbench_script(with_outbox: bool) -> String {
    const ID: &str = "(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 16, '0') \
                      || lpad(to_hex(:n::bigint), 16, '0'))::uuid";
    let event = if with_outbox {
        format!(
            ", new_event AS (INSERT INTO outbox (event_id, subject, payload) \
             SELECT {ID}, 'orders.placed', bench_payload() FROM new_order)"
        )
    } else {
        String::new()
    };
    format!(
        "\\set n random(1, 1000000000000000)\n\
         WITH new_order AS (INSERT INTO orders (id, customer_id, currency, total_minor, created_at) \
         VALUES ({ID}, 'c' || :client_id::text, 'EUR', 2500, now()) RETURNING id), \
         new_lines AS (INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_minor) \
         SELECT new_order.id, line.* FROM new_order, \
         UNNEST('{{1}}'::int[], '{{SKU-1}}'::text[], '{{1}}'::bigint[], '{{2500}}'::bigint[]) AS line)\
         {event} SELECT 1;\n"
    )
}

/// [`WRITE`] from pgbench at the same concurrency for the same time, against
/// the database at `url` (migrated here); transactions per second.
async fn pgbench(url: &str, config: &BenchConfig, with_outbox: bool) -> anyhow::Result<f64> {
    migrate(url).await?;
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION bench_payload() RETURNS jsonb LANGUAGE sql IMMUTABLE
         AS $body$ SELECT '{}'::jsonb $body$",
        event_payload().to_string().replace('\'', "''")
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    let script = tempfile::Builder::new()
        .prefix("bench-")
        .suffix(".sql")
        .tempfile()?;
    std::fs::write(script.path(), pgbench_script(with_outbox))?;
    let output = tokio::process::Command::new(crate::servers::pgbench_bin()?)
        // Prepared, as sqlx runs it: parsed and planned once per connection.
        .args(["-n", "-M", "prepared", "-j", "2", "-c"])
        .arg(config.concurrency.to_string())
        .arg("-T")
        .arg(config.duration.as_secs().max(1).to_string())
        .arg("-f")
        .arg(script.path())
        .arg(url)
        .output()
        .await
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
}

/// Creates order-service's tables in the database at `url`.
async fn migrate(url: &str) -> anyhow::Result<()> {
    let pool = PgPool::connect(url).await?;
    sqlx::migrate!("../order-service/migrations")
        .run(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// The outbox payload both baselines write: an event the size of a
/// one-line order's.
fn event_payload() -> serde_json::Value {
    serde_json::json!({ "payload": order("c1", &[("SKU-1", 1, 2500)]), "event_type": "OrderPlaced" })
}

/// The write transaction of the mode, straight into PostgreSQL, from
/// `concurrency` connections for `duration`; transactions per second.
async fn baseline(url: &str, config: &BenchConfig, with_outbox: bool) -> anyhow::Result<f64> {
    migrate(url).await?;
    let payload = event_payload();
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut workers = Vec::new();
    for _ in 0..config.concurrency {
        let (url, payload) = (url.to_owned(), payload.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let mut done = 0_u64;
            while Instant::now() < deadline {
                sqlx::query(WRITE)
                    .bind(Uuid::now_v7())
                    .bind(chrono::Utc::now())
                    .bind(with_outbox.then(Uuid::now_v7))
                    .bind(&payload)
                    .execute(&mut conn)
                    .await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The full-speed phase: `config.concurrency` clients place orders on
/// `urls` as fast as they can for `config.duration`, then every order is
/// waited for until credited. Returns what was driven and the throughput,
/// orders per second from the first order placed to the last credit.
async fn full_speed(
    env: &TestEnv,
    urls: &[String],
    rewards_db: &PgPool,
    config: &BenchConfig,
    label: &str,
) -> anyhow::Result<(Driven, f64)> {
    let full = drive(
        env,
        urls,
        config.concurrency,
        config.duration,
        None,
        label,
        "full speed",
    )
    .await;
    wait_until_credited(rewards_db, full.placed, label).await?;
    let (credited, span): (i64, f64) = sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM max(credited_at) - min(order_placed_at))::float8, 0)
         FROM reward_ledger",
    )
    .fetch_one(rewards_db)
    .await?;
    let throughput = if span > 0.0 {
        credited as f64 / span
    } else {
        0.0
    };
    Ok((full, throughput))
}

struct Driven {
    placed: u64,
    latencies_ms: Vec<f64>,
}

/// `concurrency` clients placing orders for `duration`, as fast as they can
/// or, with `rate`, at that many orders per second in all. Each client
/// takes `urls` in turn, starting at one of its own, so that the load is
/// spread evenly over several instances.
async fn drive(
    env: &TestEnv,
    urls: &[String],
    concurrency: usize,
    duration: Duration,
    rate: Option<f64>,
    mode: &str,
    phase: &str,
) -> Driven {
    let placed = Arc::new(AtomicU64::new(0));
    let pacer = rate.map(|rate| {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Arc::new(Mutex::new(ticks))
    });
    let started = Instant::now();
    let deadline = started + duration;
    let reporter = {
        let (placed, mode, phase) = (placed.clone(), mode.to_owned(), phase.to_owned());
        tokio::spawn(async move {
            let mut second = tokio::time::interval(Duration::from_secs(1));
            second.tick().await;
            loop {
                second.tick().await;
                let elapsed = started.elapsed().as_secs_f64().min(duration.as_secs_f64());
                progress(
                    &mode,
                    &format!(
                        "{phase}: {elapsed:.0}/{:.0} s, {} orders placed",
                        duration.as_secs_f64(),
                        placed.load(Ordering::Relaxed)
                    ),
                );
            }
        })
    };
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (http, urls, placed, pacer) = (
            env.http.clone(),
            urls.to_vec(),
            placed.clone(),
            pacer.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0_usize;
            while Instant::now() < deadline {
                if let Some(pacer) = &pacer {
                    pacer.lock().await.tick().await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let body = order(
                    &format!("c{}", (worker * 7 + i) % 50),
                    &[("SKU-1", 1, 2500)],
                );
                let url = &urls[(worker + i) % urls.len()];
                i += 1;
                let sent = Instant::now();
                let response = http.post(format!("{url}/orders")).json(&body).send().await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    placed.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut latencies_ms = Vec::new();
    for worker in workers {
        latencies_ms.extend(worker.await.unwrap_or_default());
    }
    reporter.abort();
    Driven {
        placed: placed.load(Ordering::Relaxed),
        latencies_ms,
    }
}

async fn wait_until_credited(rewards_db: &PgPool, placed: u64, mode: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let credited = u64::try_from(count(rewards_db, "reward_ledger").await).unwrap_or(0);
        if credited >= placed {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(180),
            "only {credited} of {placed} orders credited after 180 s"
        );
        if last_report.elapsed() >= Duration::from_secs(1) {
            progress(mode, &format!("waiting for credits: {credited}/{placed}"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Order placed (committed or accepted) → stored in JetStream, in ms, for
/// the orders of the half-load phase.
async fn publish_lags(
    env: &TestEnv,
    rewards_db: &PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<f64>> {
    let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT stream_sequence, order_placed_at FROM reward_ledger WHERE order_placed_at >= $1",
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

/// The `q` quantile of `values_ms`, to three significant digits of a microsecond.
fn percentile(values_ms: &[f64], q: f64) -> f64 {
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
    if histogram.is_empty() {
        return 0.0;
    }
    histogram.value_at_quantile(q) as f64 / 1000.0
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

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_within_a_thousandth_of_the_exact_rank() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        for (q, exact) in [(0.5, 500.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = percentile(&values, q);
            assert!(
                (got - exact).abs() <= exact / 1000.0,
                "p{q}: {got} vs {exact}"
            );
        }
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[-0.2], 0.5), 0.0);
    }
}
