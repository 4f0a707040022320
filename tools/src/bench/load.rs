//! The load: clients that place orders as fast as they can or at a set
//! rate, spread over the order-service instances, and the wait until every
//! order they placed is credited.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::api::{credits, order};
use harness::env::TestEnv;
use sqlx::PgPool;
use tokio::sync::Mutex;

use super::{BenchConfig, progress};

/// The full-speed phase: `config.concurrency` clients place orders on
/// `urls` as fast as they can for `config.duration`, then every order is
/// waited for until credited. Returns what was driven and the throughput,
/// orders per second from the first order placed to the last credit.
pub(super) async fn full_speed(
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
         FROM reward_ledger WHERE kind = 'credit'",
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

/// What the clients of a phase did.
pub(super) struct Driven {
    /// Orders acknowledged (2xx).
    pub(super) placed: u64,
    /// The acknowledged orders' `POST /orders`, as the clients timed it.
    pub(super) latencies_ms: Vec<f64>,
}

/// `concurrency` clients placing orders for `duration`, as fast as they can
/// or, with `rate`, at that many orders per second in all. Each client
/// takes `urls` in turn, starting at one of its own, so that the load is
/// spread evenly over several instances.
pub(super) async fn drive(
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

pub(super) async fn wait_until_credited(
    rewards_db: &PgPool,
    placed: u64,
    label: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let credited = u64::try_from(credits(rewards_db).await).unwrap_or(0);
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
