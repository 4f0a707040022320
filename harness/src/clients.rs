//! Clients that behave as they should: every order carries an
//! `Idempotency-Key`, and a request that fails (the service is down, a 5xx,
//! a 504 whose outcome is unknown) is retried with the same key until it is
//! acknowledged (a 4xx is a bug of the run, and fails it). Every tenth
//! order is sent once more after its acknowledgement, as by a client whose
//! answer was lost on the way; each answer is recorded with the order id it
//! named, so that a retry placed as a second order shows as two ids for one
//! key. With several order-service instances, order `i` goes to
//! instance `i mod n` and each retry to the next one, as a load balancer
//! spreads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;

use crate::api::{order, place_order};

/// How many orders, how fast, and what the progress bar says.
#[derive(Debug, Clone)]
pub struct Load {
    pub orders: usize,
    /// Orders per second the clients aim at, together.
    pub rate: f64,
    /// Prefix of the keys (no spaces), and the progress bar's label.
    pub label: String,
}

/// What a client asked for: the customer and what the order earns from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub customer_id: String,
    pub total_minor: i64,
    pub currency: String,
}

impl Asked {
    fn of(body: &Value) -> Self {
        let lines = body["lines"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        Self {
            customer_id: body["customer_id"].as_str().unwrap_or_default().to_owned(),
            total_minor: lines
                .iter()
                .map(|l| {
                    l["quantity"].as_i64().unwrap_or(0)
                        * l["unit_price_minor"].as_i64().unwrap_or(0)
                })
                .sum(),
            currency: body["currency"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A success answer: the request's key and what it asked, and the order id
/// the answer named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub key: String,
    pub asked: Asked,
    pub order_id: Uuid,
}

/// The distinct order ids of `answers`.
pub fn order_ids(answers: &[Answer]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = answers.iter().map(|a| a.order_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every how many orders one is sent again after its acknowledgement.
const SENT_AGAIN_EVERY: usize = 10;

/// Clients at work; [`finish`](Self::finish) waits for every order.
pub struct Clients {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acknowledged: Arc<AtomicUsize>,
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Answers other than success, by status (0: no answer).
    refusals: Arc<Mutex<BTreeMap<u16, usize>>>,
}

/// Order `i` of the clients labelled `label`: its body and its key.
pub fn request(label: &str, i: usize) -> (Value, String) {
    let body = order(
        &format!("c{}", i % 40),
        &[("SKU-1", 1, 100 + (i % 7) as i64 * 100)],
    );
    (body, format!("{label}-{i}"))
}

/// How long a client retries one order before the run fails.
const GIVE_UP: Duration = Duration::from_secs(120);

/// Concurrent clients.
const CLIENTS: usize = 16;

impl Clients {
    /// Starts placing `load.orders` orders on the order-service instances
    /// at `urls`.
    pub fn start(http: &reqwest::Client, urls: &[String], load: &Load) -> Self {
        assert!(!urls.is_empty(), "clients need an instance to talk to");
        let total = load.orders;
        let next = Arc::new(AtomicUsize::new(0));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let refusals = Arc::new(Mutex::new(BTreeMap::new()));
        let pacer = {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / load.rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Arc::new(tokio::sync::Mutex::new(ticks))
        };
        let progress = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template(&format!(
                "[{}] [{{bar:30}}] {{pos}}/{{len}} acknowledged",
                load.label
            ))
            .expect("a valid template")
            .progress_chars("#-"),
        );
        let urls: Arc<[String]> = urls.into();
        let tasks = (0..CLIENTS)
            .map(|_| {
                let (http, urls, next, acknowledged, answers, refusals, pacer, progress, label) = (
                    http.clone(),
                    urls.clone(),
                    next.clone(),
                    acknowledged.clone(),
                    answers.clone(),
                    refusals.clone(),
                    pacer.clone(),
                    progress.clone(),
                    load.label.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        pacer.lock().await.tick().await;
                        let (body, key) = request(&label, i);
                        let asked = Asked::of(&body);
                        let wanted = if i % SENT_AGAIN_EVERY == 0 { 2 } else { 1 };
                        let mut answered = 0;
                        let deadline = Instant::now() + GIVE_UP;
                        for attempt in 0.. {
                            assert!(
                                Instant::now() < deadline,
                                "order {key} not acknowledged within {GIVE_UP:?}"
                            );
                            let url = &urls[(i + attempt) % urls.len()];
                            let status = match place_order(&http, url, &body, Some(&key)).await {
                                Ok(response) if response.status().is_success() => {
                                    if let Ok(placed) = response.json::<Value>().await
                                        && let Some(id) =
                                            placed["id"].as_str().and_then(|id| id.parse().ok())
                                    {
                                        answers.lock().expect("lock").push(Answer {
                                            key: key.clone(),
                                            asked: asked.clone(),
                                            order_id: id,
                                        });
                                        if answered == 0 {
                                            acknowledged.fetch_add(1, Ordering::Relaxed);
                                            progress.inc(1);
                                        }
                                        answered += 1;
                                        if answered == wanted {
                                            break;
                                        }
                                        continue;
                                    }
                                    0
                                }
                                Ok(response) if response.status().is_client_error() => {
                                    let status = response.status();
                                    let body = response.text().await.unwrap_or_default();
                                    panic!("order {key} refused with {status}: {body}");
                                }
                                Ok(response) => response.status().as_u16(),
                                Err(_) => 0,
                            };
                            *refusals.lock().expect("lock").entry(status).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            tasks,
            acknowledged,
            answers,
            refusals,
        }
    }

    /// Orders acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` orders are acknowledged.
    pub async fn wait_for(&self, n: usize) {
        crate::eventually(
            &format!("{n} acknowledged orders"),
            Duration::from_secs(120),
            || async { (self.acknowledged() >= n).then_some(()) },
        )
        .await;
    }

    /// Waits for every order to be acknowledged; the success answers, and
    /// the answers that were not a success, by status (0: no answer).
    pub async fn finish(self) -> anyhow::Result<(Vec<Answer>, BTreeMap<u16, usize>)> {
        for task in self.tasks {
            task.await?;
        }
        let answers = self.answers.lock().expect("lock").clone();
        let refusals = self.refusals.lock().expect("lock").clone();
        Ok((answers, refusals))
    }
}
