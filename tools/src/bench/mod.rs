//! The benchmark: what consistency costs in each mode, and how stale
//! rewards-service gets, as ratios to limits measured in the same run.
//!
//! Each mode runs `runs` times, each time on fresh private servers
//! (PostgreSQL with fsync ON, NATS flushing every write), and a run is:
//! 1. **Baseline**: the mode's own write transaction (order + lines, plus the
//!    outbox row where the mode writes one) issued directly against the same
//!    PostgreSQL at the same concurrency, for the same time, from sqlx and
//!    from pgbench.
//! 2. **Full speed**: `concurrency` clients `POST /orders` as fast as they can;
//!    then the run waits until every placed order is credited.
//!    Throughput = orders / (last credit − first order), placed → credited.
//!    Over this phase, the CPU time of each process ([`cpu`]): the
//!    services, PostgreSQL with all its backends, nats-server and the load
//!    generator, per 1,000 orders.
//! 3. **Half load**: an open loop at half that throughput, to measure the
//!    consistency lag (order committed or accepted → reward committed, both
//!    stamped by the one PostgreSQL server's clock) and the publish lag
//!    (order → stored in JetStream, both clocks of this machine).
//! 4. Peak RSS of each service (`VmHWM`).
//!
//! The runs are interleaved: round `r` runs every mode once, forward in odd
//! rounds and backward in even ones, so that a drift over the whole
//! benchmark (a neighbour's build, a growing page cache) falls on every mode
//! alike rather than on the modes that happened to run last. Each figure
//! reported is the median over a mode's runs, with its min–max beside it;
//! a ratio is computed within each run (against that run's own baselines,
//! and against the dual-write run of the same round) before the median is
//! taken. Every percentile comes from an hdrhistogram ([`percentiles`]).
//!
//! [`report`] renders the results as Markdown and as an SVG chart;
//! [`waiters`] measures what `?wait` readers cost the write path;
//! [`topology`] what replication and a second instance cost.

pub mod broker;
mod cpu;
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

pub use self::cpu::Processes;
use harness::api::{count, order};
use harness::env::{Private, TestEnv};
use harness::service::Service;

/// A pattern as the benchmark runs it: the harness's [`Mode`](harness::Mode).
pub use harness::mode::Mode as BenchMode;

/// Whether the mode's write transaction includes an outbox row.
fn writes_outbox(mode: BenchMode) -> bool {
    matches!(mode, BenchMode::Outbox | BenchMode::OutboxCdc)
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub modes: Vec<BenchMode>,
    /// Length of the full-speed phase (and of the baseline); the half-load
    /// phase lasts half of it.
    pub duration: Duration,
    pub concurrency: usize,
    /// Runs of each mode, each on fresh servers. (The topology comparison
    /// has rounds of its own and ignores this.)
    pub runs: usize,
}

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
    fn over_runs<T>(runs: &[&Figures<f64>], stat: impl Fn(Vec<f64>) -> T) -> Figures<T> {
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
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The smallest and the largest of `values`.
fn min_max(values: Vec<f64>) -> [f64; 2] {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        [0.0, 0.0]
    } else {
        [min, max]
    }
}

/// One run of one mode, as it came out.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub mode: &'static str,
    /// The round it ran in, from 1.
    pub round: usize,
    #[serde(flatten)]
    pub figures: Figures<f64>,
}

/// One mode over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    /// The median of each figure over the runs (of a ratio, the median of
    /// the per-run ratios).
    #[serde(flatten)]
    pub median: Figures<f64>,
    /// The smallest and the largest value of each figure over the runs.
    pub spread: Figures<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub duration_secs: f64,
    pub concurrency: usize,
    pub cores: usize,
    pub runs_per_mode: usize,
    /// Clock ticks per second of `/proc/<pid>/stat`'s CPU times, whose
    /// granularity bounds the CPU table's.
    pub clock_ticks_per_second: f64,
    /// Per mode, in the order given.
    pub results: Vec<ModeResult>,
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
}

/// Runs every configured mode `config.runs` times, interleaved (see the
/// module's comment), reporting progress on stderr.
pub async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(config.runs > 0, "the benchmark needs at least one run");
    let ticks_per_second = cpu::ticks_per_second();
    let mut runs: Vec<Run> = Vec::new();
    for round in 1..=config.runs {
        for mode in round_order(&config.modes, round) {
            let label = format!("{} run {round}/{}", mode.name(), config.runs);
            let figures = run_mode(mode, config, &label, ticks_per_second)
                .await
                .with_context(|| format!("benchmarking {label}"))?;
            runs.push(Run {
                mode: mode.name(),
                round,
                figures,
            });
        }
    }
    compare_with_control(&mut runs);
    Ok(Report {
        duration_secs: config.duration.as_secs_f64(),
        concurrency: config.concurrency,
        cores: cores(),
        runs_per_mode: config.runs,
        clock_ticks_per_second: ticks_per_second,
        results: summarize(&config.modes, &runs),
        runs,
    })
}

/// The modes in the order round `round` (from 1) runs them: as given in
/// odd rounds, reversed in even ones.
fn round_order(modes: &[BenchMode], round: usize) -> Vec<BenchMode> {
    let mut order = modes.to_vec();
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// Sets each run's cost against the dual-write run of its round, when
/// dual-write ran: a drift between rounds then cancels out of the ratio.
fn compare_with_control(runs: &mut [Run]) {
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(0);
    for round in 1..=rounds {
        let control = runs
            .iter()
            .find(|r| r.round == round && r.mode == BenchMode::DualWrite.name())
            .map(|r| r.figures.throughput);
        if let Some(control) = control {
            for run in runs.iter_mut().filter(|r| r.round == round) {
                run.figures.cost_vs_dual_write = Some(1.0 - run.figures.throughput / control);
            }
        }
    }
}

/// Each of `modes` over its runs: the median and the min–max of every figure.
fn summarize(modes: &[BenchMode], runs: &[Run]) -> Vec<ModeResult> {
    modes
        .iter()
        .map(|mode| {
            let of_mode: Vec<&Figures<f64>> = runs
                .iter()
                .filter(|r| r.mode == mode.name())
                .map(|r| &r.figures)
                .collect();
            ModeResult {
                mode: mode.name(),
                median: Figures::over_runs(&of_mode, median),
                spread: Figures::over_runs(&of_mode, min_max),
            }
        })
        .collect()
}

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One run of `mode` on fresh servers; `label` names it in the progress
/// lines.
async fn run_mode(
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
         FROM reward_ledger WHERE order_placed_at >= $1",
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

/// A line on stderr about the run `label` names.
fn progress(label: &str, message: &str) {
    eprintln!("[bench {label}] {message}");
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
    let output = tokio::process::Command::new(harness::servers::pgbench_bin()?)
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
    label: &str,
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
        let (placed, label, phase) = (placed.clone(), label.to_owned(), phase.to_owned());
        tokio::spawn(async move {
            let mut second = tokio::time::interval(Duration::from_secs(1));
            second.tick().await;
            loop {
                second.tick().await;
                let elapsed = started.elapsed().as_secs_f64().min(duration.as_secs_f64());
                progress(
                    &label,
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

async fn wait_until_credited(rewards_db: &PgPool, placed: u64, label: &str) -> anyhow::Result<()> {
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
            progress(label, &format!("waiting for credits: {credited}/{placed}"));
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

/// The `quantiles` of `values_ms`, from an hdrhistogram to three
/// significant digits of a microsecond (0 when there are no values). Every
/// percentile of the report is computed here, the HTTP latencies measured
/// by the clients as well as the lags read from the databases.
fn percentiles<const N: usize>(values_ms: &[f64], quantiles: [f64; N]) -> [f64; N] {
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
    use super::{
        BenchMode, Figures, Run, compare_with_control, median, min_max, percentiles, round_order,
        summarize,
    };

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

    #[test]
    fn rounds_run_the_modes_forward_then_backward() {
        let modes = [BenchMode::Outbox, BenchMode::Cdc, BenchMode::DualWrite];
        assert_eq!(round_order(&modes, 1), modes);
        assert_eq!(
            round_order(&modes, 2),
            [BenchMode::DualWrite, BenchMode::Cdc, BenchMode::Outbox]
        );
        assert_eq!(round_order(&modes, 3), modes);
    }

    /// A run of `mode` in `round` with `throughput`, and the order-service
    /// CPU time and HTTP p99 set to the same number to follow them through.
    fn run(mode: BenchMode, round: usize, throughput: f64) -> Run {
        let mut figures = Figures::<f64> {
            throughput,
            http_p99_ms: throughput,
            ..Figures::default()
        };
        figures.cpu_seconds_per_1000_orders.order_service = throughput;
        Run {
            mode: mode.name(),
            round,
            figures,
        }
    }

    #[test]
    fn a_mode_reports_the_median_and_spread_of_its_runs_and_of_its_per_round_ratios() {
        use BenchMode::{DualWrite, Outbox};
        let mut runs = vec![
            run(Outbox, 1, 100.0),
            run(DualWrite, 1, 200.0),
            run(DualWrite, 2, 200.0),
            run(Outbox, 2, 300.0),
            run(Outbox, 3, 200.0),
            run(DualWrite, 3, 400.0),
        ];
        compare_with_control(&mut runs);
        let results = summarize(&[Outbox, DualWrite], &runs);
        let outbox = &results[0];
        assert_eq!(outbox.mode, "outbox");
        assert_eq!(outbox.median.throughput, 200.0);
        assert_eq!(outbox.spread.throughput, [100.0, 300.0]);
        assert_eq!(outbox.median.http_p99_ms, 200.0);
        assert_eq!(
            outbox.spread.cpu_seconds_per_1000_orders.order_service,
            [100.0, 300.0]
        );
        // Per round 1 − 100/200, 1 − 300/200, 1 − 200/400: not 1 − 200/200.
        assert_eq!(outbox.median.cost_vs_dual_write, Some(0.5));
        assert_eq!(outbox.spread.cost_vs_dual_write, Some([-0.5, 0.5]));
        assert_eq!(results[1].median.cost_vs_dual_write, Some(0.0));
    }

    #[test]
    fn without_a_control_there_is_no_cost() {
        let mut runs = vec![run(BenchMode::Outbox, 1, 100.0)];
        compare_with_control(&mut runs);
        let results = summarize(&[BenchMode::Outbox], &runs);
        assert_eq!(results[0].median.cost_vs_dual_write, None);
        assert_eq!(results[0].spread.cost_vs_dual_write, None);
    }
}
