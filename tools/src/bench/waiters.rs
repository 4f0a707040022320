//! What `GET /orders/{id}?wait=` readers cost the write path: placement
//! throughput with and without `waiters` concurrent readers waiting for
//! orders that never come, measured in the same run on the same services.
//!
//! Phases alternate ABBA (without, with, with, without, …) so that drift
//! over the run falls on both sides alike; the ratio is placed orders per
//! second with waiters over without.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use super::load::drive;
use super::{BenchMode, progress};
use harness::env::{Private, TestEnv};

#[derive(Debug, Clone)]
pub struct WaitersConfig {
    pub mode: BenchMode,
    pub waiters: usize,
    /// Length of each phase.
    pub duration: Duration,
    /// Phases of each kind.
    pub rounds: usize,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitersResult {
    pub mode: &'static str,
    pub waiters: usize,
    pub without_per_sec: f64,
    pub with_per_sec: f64,
    /// `with_per_sec / without_per_sec`.
    pub ratio: f64,
    /// Waits that ended in 404, as they should.
    pub finished_waits: u64,
    /// Waits that ended otherwise, by status (or `error`).
    pub other_waits: BTreeMap<String, u64>,
}

impl WaitersResult {
    pub fn markdown(&self) -> String {
        let other = if self.other_waits.is_empty() {
            "none".to_owned()
        } else {
            self.other_waits
                .iter()
                .map(|(outcome, n)| format!("{outcome} × {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "| mode | waiters | placed /s without | placed /s with | ratio | waits answered 404 | other answers |\n\
             |---|---:|---:|---:|---:|---:|---|\n\
             | {} | {} | {:.0} | {:.0} | {:.3} | {} | {} |\n",
            self.mode,
            self.waiters,
            self.without_per_sec,
            self.with_per_sec,
            self.ratio,
            self.finished_waits,
            other,
        )
    }
}

pub async fn run(config: &WaitersConfig) -> anyhow::Result<WaitersResult> {
    let name = config.mode.name();
    let env = TestEnv::with_private(
        &format!("bench_waiters_{}", name.replace('-', "_")),
        Private {
            nats: true,
            postgres: true,
            durable: true,
        },
    )
    .await;
    let orders = env.order_service(config.mode).start().await;
    let urls = [orders.url().to_owned()];
    let finished = Arc::new(AtomicU64::new(0));
    let other = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut without, mut with) = (0_u64, 0_u64);
    for round in 1..=config.rounds {
        // ABBA: odd rounds start without waiters, even rounds with, so that
        // a drift over the run (a growing table, a neighbour's build) falls
        // on both sides alike.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for waiting in order {
            let readers =
                waiting.then(|| start_waiters(orders.url(), config.waiters, &finished, &other));
            let phase = if waiting {
                // Let every reader get its request in before measuring.
                tokio::time::sleep(Duration::from_secs(1)).await;
                format!("round {round}, {} waiters", config.waiters)
            } else {
                format!("round {round}, no waiters")
            };
            let placed = drive(
                &env,
                &urls,
                config.concurrency,
                config.duration,
                None,
                name,
                &phase,
            )
            .await
            .placed;
            if waiting {
                with += placed;
            } else {
                without += placed;
            }
            for reader in readers.into_iter().flatten() {
                reader.abort();
            }
        }
    }
    let seconds = config.duration.as_secs_f64() * config.rounds as f64;
    let (without_per_sec, with_per_sec) = (without as f64 / seconds, with as f64 / seconds);
    let result = WaitersResult {
        mode: name,
        waiters: config.waiters,
        without_per_sec,
        with_per_sec,
        ratio: with_per_sec / without_per_sec,
        finished_waits: finished.load(Ordering::Relaxed),
        other_waits: other.lock().expect("lock").clone(),
    };
    progress(
        name,
        &format!(
            "{:.0}/s placed with {} waiters, {:.0}/s without: ratio {:.3}",
            result.with_per_sec, result.waiters, result.without_per_sec, result.ratio
        ),
    );
    Ok(result)
}

/// `n` clients each waiting, again and again, for an order that never comes.
fn start_waiters(
    base_url: &str,
    n: usize,
    finished: &Arc<AtomicU64>,
    other: &Arc<Mutex<BTreeMap<String, u64>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::new();
    (0..n)
        .map(|_| {
            let (http, base_url) = (http.clone(), base_url.to_owned());
            let (finished, other) = (finished.clone(), other.clone());
            tokio::spawn(async move {
                loop {
                    let started = Instant::now();
                    let url = format!("{base_url}/orders/{}?wait=10s", Uuid::now_v7());
                    let outcome = match http.get(url).send().await {
                        Ok(response) if response.status() == 404 => {
                            finished.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok(response) => response.status().as_u16().to_string(),
                        Err(_) => "error".to_owned(),
                    };
                    *other.lock().expect("lock").entry(outcome).or_default() += 1;
                    // Not a hot loop when the service refuses.
                    let pause = Duration::from_millis(100).saturating_sub(started.elapsed());
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}
