//! The database's own limit, the baseline a mode's throughput is measured
//! against: the mode's write transaction issued straight into PostgreSQL at
//! the benchmark's concurrency, from sqlx as order-service issues it and
//! from pgbench, a C client.

use std::time::Instant;

use anyhow::Context as _;
use harness::api::order;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use super::{BenchConfig, BenchMode};

/// Whether the mode's write transaction includes an outbox row.
pub(super) fn writes_outbox(mode: BenchMode) -> bool {
    matches!(mode, BenchMode::Outbox | BenchMode::OutboxCdc)
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
pub(super) async fn pgbench(
    url: &str,
    config: &BenchConfig,
    with_outbox: bool,
) -> anyhow::Result<f64> {
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
pub(super) async fn baseline(
    url: &str,
    config: &BenchConfig,
    with_outbox: bool,
) -> anyhow::Result<f64> {
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
