//! A lane: one mode's order-service and rewards-service on databases of
//! their own, the client that places an order and retries it with its key,
//! and the supervisor that starts again a service that died.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use harness::api::{order, place_order};
use harness::service::Service;
use harness::{CrashPoint, Mode, TestEnv};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use super::view::{Followed, Sample};

/// How long a dead service stays down before the supervisor starts it again.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// The longest a client waits before sending an unanswered order again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a client keeps retrying an order with its key.
const CLIENT_PATIENCE: Duration = Duration::from_secs(120);
/// Orders sent and not yet answered per lane, at most.
const IN_FLIGHT: usize = 32;

/// One mode: its services, its databases, and what it did.
pub(super) struct Lane {
    pub(super) mode: Mode,
    env: TestEnv,
    pub(super) order_service: Mutex<Option<Service>>,
    pub(super) rewards_service: Mutex<Option<Service>>,
    /// Where order-service listens, while it runs.
    order_url: tokio::sync::watch::Sender<Option<String>>,
    /// Since when a service has been down, for the supervisor's pause.
    orders_down: std::sync::Mutex<Option<Instant>>,
    rewards_down: std::sync::Mutex<Option<Instant>>,
    pub(super) orders_db: PgPool,
    pub(super) rewards_db: PgPool,
    /// Orders the clients were told about (2xx).
    pub(super) placed: AtomicU64,
    /// Orders sent and not answered yet (retries included).
    pub(super) sending: AtomicU64,
    /// Bounds `sending` for the load's orders.
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    /// Whether the supervisor is at work on this lane.
    pub(super) supervising: AtomicBool,
    /// The crash point to arm on the next start of order-service.
    pub(super) crash_next: AtomicBool,
    pub(super) crash_armed: AtomicBool,
    pub(super) restarts: AtomicU64,
    pub(super) followed: std::sync::Mutex<Option<Followed>>,
    pub(super) sample: std::sync::Mutex<Sample>,
}

/// What a client was told in the end.
pub(super) struct Answer {
    pub(super) told: String,
    pub(super) order_id: Option<Uuid>,
}

impl Lane {
    pub(super) async fn start(mode: Mode, nats_url: &str) -> anyhow::Result<Self> {
        let name = format!("console_{}", mode.name().replace('-', "_"));
        let env = TestEnv::on_nats(&name, nats_url.to_owned()).await;
        let rewards = env.rewards_service().try_start().await?;
        let orders = env.order_service(mode).try_start().await?;
        let lane = Self {
            mode,
            order_url: tokio::sync::watch::Sender::new(Some(orders.url().to_owned())),
            orders_down: std::sync::Mutex::new(None),
            rewards_down: std::sync::Mutex::new(None),
            order_service: Mutex::new(Some(orders)),
            rewards_service: Mutex::new(Some(rewards)),
            orders_db: env.orders_db().await,
            rewards_db: env.rewards_db().await,
            env,
            placed: AtomicU64::new(0),
            sending: AtomicU64::new(0),
            permits: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            supervising: AtomicBool::new(false),
            crash_next: AtomicBool::new(false),
            crash_armed: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            followed: std::sync::Mutex::new(None),
            sample: std::sync::Mutex::new(Sample::default()),
        };
        Ok(lane)
    }

    /// Sends one order under `key`, retrying with the same key while there
    /// is no answer or a 5xx, for up to [`CLIENT_PATIENCE`].
    /// Places one order under `key` (see [`Lane::keep_placing`]), counted
    /// as sending from the call on, before the future first runs.
    pub(super) fn place(
        self: &Arc<Self>,
        key: String,
    ) -> impl std::future::Future<Output = Answer> + 'static {
        self.sending.fetch_add(1, Ordering::Relaxed);
        let lane = Arc::clone(self);
        async move {
            let answer = lane.keep_placing(&key).await;
            lane.sending.fetch_sub(1, Ordering::Relaxed);
            answer
        }
    }

    async fn keep_placing(&self, key: &str) -> Answer {
        let body = order("console", &[("BOOK-42", 1, 1250)]);
        let deadline = Instant::now() + CLIENT_PATIENCE;
        let mut attempts = 0;
        let mut urls = self.order_url.subscribe();
        loop {
            attempts += 1;
            let url = urls.borrow_and_update().clone();
            if let Some(url) = url
                && let Ok(response) = place_order(&self.env.http, &url, &body, Some(key)).await
            {
                let status = response.status();
                if status.is_success() {
                    self.placed.fetch_add(1, Ordering::Relaxed);
                    let order: Value = response.json().await.unwrap_or_default();
                    let order_id = order["id"].as_str().and_then(|id| id.parse().ok());
                    let told = if attempts == 1 {
                        status.as_u16().to_string()
                    } else {
                        format!("{} after {} attempts", status.as_u16(), attempts)
                    };
                    return Answer { told, order_id };
                }
                if status.is_client_error() {
                    return Answer {
                        told: status.to_string(),
                        order_id: None,
                    };
                }
            }
            if Instant::now() > deadline {
                return Answer {
                    told: format!("no answer after {attempts} attempts"),
                    order_id: None,
                };
            }
            // Again once order-service is started anew, or after a pause
            // (the broker may be what failed).
            let _ = tokio::time::timeout(RETRY_PAUSE, urls.changed()).await;
        }
    }

    /// Starts again a service that died, once it has been down for
    /// [`RESTART_AFTER`] (looked at on each tick); tells `act` of a death
    /// at the armed crash point.
    pub(super) async fn supervise(&self, act: impl Fn(String)) {
        let mut orders = self.order_service.lock().await;
        if orders.as_mut().is_none_or(Service::has_exited) {
            if orders.take().is_some() {
                self.order_url.send_replace(None);
                *self.orders_down.lock().unwrap() = Some(Instant::now());
                if self.crash_armed.swap(false, Ordering::Relaxed) {
                    act(format!(
                        "order-service of {} died at its crash point",
                        self.mode.name()
                    ));
                }
            }
            if restart_due(&self.orders_down) {
                let armed = self.crash_next.swap(false, Ordering::Relaxed);
                let mut start = self.env.order_service(self.mode);
                if armed {
                    start = start.crash_at(crash_point(self.mode));
                }
                if let Ok(service) = start.try_start().await {
                    self.order_url.send_replace(Some(service.url().to_owned()));
                    *orders = Some(service);
                    *self.orders_down.lock().unwrap() = None;
                    self.crash_armed.store(armed, Ordering::Relaxed);
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Started again on a later tick (the broker may be down).
                    self.crash_next.fetch_or(armed, Ordering::Relaxed);
                }
            }
        }
        drop(orders);
        let mut rewards = self.rewards_service.lock().await;
        if rewards.as_mut().is_none_or(Service::has_exited) {
            if rewards.take().is_some() {
                *self.rewards_down.lock().unwrap() = Some(Instant::now());
            }
            if restart_due(&self.rewards_down)
                && let Ok(service) = self.env.rewards_service().try_start().await
            {
                *rewards = Some(service);
                *self.rewards_down.lock().unwrap() = None;
                self.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a service down since the time in `down` (if any) may start again.
fn restart_due(down: &std::sync::Mutex<Option<Instant>>) -> bool {
    down.lock()
        .unwrap()
        .is_none_or(|since| since.elapsed() >= RESTART_AFTER)
}

/// The crash point of a mode's "arm" button.
pub(super) fn crash_point(mode: Mode) -> CrashPoint {
    if mode == Mode::SelfRead {
        CrashPoint::SelfReadAfterPublish
    } else {
        CrashPoint::AfterCommitBeforePublish
    }
}
