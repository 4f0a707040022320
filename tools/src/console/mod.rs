//! `order-events console`: the patterns side by side, live, in a browser.
//!
//! The console runs its own world, as the tests do: a private PostgreSQL
//! (the harness's), a private nats-server that the console may stop and
//! start, a proxy in front of it that may delay the broker's replies, and
//! for each mode chosen (a *lane*) an order-service and a rewards-service
//! on databases of their own. A load generator places orders at the chosen
//! rate, each with an `Idempotency-Key`, retrying a request that got no
//! answer with the same key, as a careful client does. A supervisor starts
//! again any service that died. A sampler reads, twice a second, what each
//! lane placed, stored and credited, the consistency lag (order placed →
//! credited) over the last seconds, and the audit: orders older than a few
//! seconds without a credit. The page ([`web`]) shows it all over
//! server-sent events and has the buttons that break things.

pub mod web;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use harness::api::{order, place_order};
use harness::proxy::{BrokerProxy, Replies};
use harness::servers::Nats;
use harness::service::Service;
use harness::{CrashPoint, Mode, TestEnv};

/// The modes a console can run, in the order the page shows them.
pub const MODES: [Mode; 4] = [Mode::Outbox, Mode::Cdc, Mode::SelfRead, Mode::DualWrite];

/// A mode on the console's command line: [`Mode`]'s `ValueEnum`, narrowed
/// to [`MODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleMode(pub Mode);

impl clap::ValueEnum for ConsoleMode {
    fn value_variants<'a>() -> &'a [Self] {
        const CHOICES: [ConsoleMode; MODES.len()] = {
            let mut choices = [ConsoleMode(MODES[0]); MODES.len()];
            let mut i = 1;
            while i < MODES.len() {
                choices[i] = ConsoleMode(MODES[i]);
                i += 1;
            }
            choices
        };
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        self.0.to_possible_value()
    }
}

/// How old an order without a credit must be before the audit counts it:
/// younger ones are in flight.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);
/// The window of the lag percentiles.
pub const LAG_WINDOW: Duration = Duration::from_secs(10);
/// How long a dead service stays down before the supervisor starts it again.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// The longest a client waits before sending an unanswered order again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a client keeps retrying an order with its key.
const CLIENT_PATIENCE: Duration = Duration::from_secs(120);
/// How often the sampler and the supervisor look.
const TICK: Duration = Duration::from_millis(500);
/// Clients per lane; they share the lane's rate.
const CLIENTS: u32 = 4;
/// Orders sent and not yet answered per lane, at most.
const IN_FLIGHT: usize = 32;

/// The console's world; cheap to share.
struct Console {
    nats: std::sync::Mutex<Nats>,
    proxy: BrokerProxy,
    broker_up: AtomicBool,
    broker_delay_ms: AtomicU32,
    /// Orders per second per lane; 0 pauses the load.
    rate: tokio::sync::watch::Sender<u32>,
    lanes: Mutex<Vec<Arc<Lane>>>,
    actions: std::sync::Mutex<VecDeque<String>>,
    started: Instant,
}

/// One mode: its services, its databases, and what it did.
struct Lane {
    mode: Mode,
    env: TestEnv,
    order_service: Mutex<Option<Service>>,
    rewards_service: Mutex<Option<Service>>,
    /// Where order-service listens, while it runs.
    order_url: tokio::sync::watch::Sender<Option<String>>,
    /// Since when a service has been down, for the supervisor's pause.
    orders_down: std::sync::Mutex<Option<Instant>>,
    rewards_down: std::sync::Mutex<Option<Instant>>,
    orders_db: PgPool,
    rewards_db: PgPool,
    /// Orders the clients were told about (2xx).
    placed: AtomicU64,
    /// Orders sent and not answered yet (retries included).
    sending: AtomicU64,
    /// Bounds `sending` for the load's orders.
    permits: Arc<tokio::sync::Semaphore>,
    /// Whether the supervisor is at work on this lane.
    supervising: AtomicBool,
    /// The crash point to arm on the next start of order-service.
    crash_next: AtomicBool,
    crash_armed: AtomicBool,
    restarts: AtomicU64,
    followed: std::sync::Mutex<Option<Followed>>,
    sample: std::sync::Mutex<Sample>,
}

/// A single order the user placed to follow.
#[derive(Debug, Clone, Serialize)]
pub struct Followed {
    pub key: String,
    pub order_id: Option<Uuid>,
    pub told: String,
    pub stored: bool,
    pub event_id: Option<Uuid>,
    pub credited_points: Option<i64>,
}

/// What the sampler read last.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub stored: i64,
    pub credited: i64,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Orders older than [`AUDIT_GRACE`] without a credit.
    pub without_credit: i64,
}

/// A lane as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LaneView {
    pub mode: &'static str,
    pub order_service_up: bool,
    pub rewards_service_up: bool,
    pub crash_armed: bool,
    pub restarts: u64,
    pub placed: u64,
    pub in_flight: i64,
    #[serde(flatten)]
    pub sample: Sample,
    pub followed: Option<Followed>,
}

/// Everything the page shows, sent twice a second.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub seconds: f64,
    pub rate: u32,
    pub broker_up: bool,
    pub broker_delay_ms: u32,
    pub lanes: Vec<LaneView>,
    pub actions: Vec<String>,
}

impl Console {
    async fn start() -> anyhow::Result<Arc<Self>> {
        let nats = tokio::task::spawn_blocking(Nats::start).await??;
        let proxy = BrokerProxy::start(&nats.url()).await;
        let console = Arc::new(Self {
            nats: std::sync::Mutex::new(nats),
            proxy,
            broker_up: AtomicBool::new(true),
            broker_delay_ms: AtomicU32::new(0),
            rate: tokio::sync::watch::Sender::new(0),
            lanes: Mutex::new(Vec::new()),
            actions: std::sync::Mutex::new(VecDeque::new()),
            started: Instant::now(),
        });
        Ok(console)
    }

    fn act(&self, action: String) {
        let at = self.started.elapsed().as_secs_f64();
        let mut actions = self.actions.lock().unwrap();
        actions.push_front(format!("{at:>6.1}s  {action}"));
        actions.truncate(12);
    }

    /// Starts the lanes of `modes` not yet running, and sets the rate.
    async fn run(self: &Arc<Self>, modes: &[Mode], rate: u32) -> anyhow::Result<()> {
        let mut lanes = self.lanes.lock().await;
        for &mode in modes {
            if lanes.iter().any(|lane| lane.mode == mode) {
                continue;
            }
            self.act(format!("starting {}", mode.name()));
            let lane = Arc::new(Lane::start(mode, &self.proxy.url()).await?);
            for _ in 0..CLIENTS {
                tokio::task::spawn_local(Arc::clone(self).load(Arc::clone(&lane)));
            }
            lanes.push(lane);
        }
        lanes.sort_by_key(|lane| MODES.iter().position(|&m| m == lane.mode));
        self.rate.send_replace(rate);
        self.act(format!("{rate} orders/s per lane"));
        Ok(())
    }

    /// Pauses the load (orders already sent are finished).
    fn pause(&self) {
        self.rate.send_replace(0);
        self.act("load paused".into());
    }

    async fn lane(&self, mode: Mode) -> Option<Arc<Lane>> {
        self.lanes
            .lock()
            .await
            .iter()
            .find(|lane| lane.mode == mode)
            .cloned()
    }

    /// SIGKILL of a lane's service; the supervisor starts it again.
    async fn kill(&self, mode: Mode, order_service: bool) -> bool {
        let Some(lane) = self.lane(mode).await else {
            return false;
        };
        let slot = if order_service {
            &lane.order_service
        } else {
            &lane.rewards_service
        };
        if let Some(service) = slot.lock().await.as_mut() {
            service.kill().await;
        }
        let name = if order_service {
            "order-service"
        } else {
            "rewards-service"
        };
        self.act(format!("killed {name} of {}", mode.name()));
        true
    }

    /// Restarts a lane's order-service with its crash point armed: the next
    /// order kills it where a naive service loses the event.
    async fn arm_crash(&self, mode: Mode) -> bool {
        let Some(lane) = self.lane(mode).await else {
            return false;
        };
        lane.crash_next.store(true, Ordering::Relaxed);
        if let Some(service) = lane.order_service.lock().await.as_mut() {
            // The supervisor starts it again with the point armed.
            service.kill().await;
        }
        self.act(format!(
            "armed {} in {} for the next order",
            crash_point(mode).name(),
            mode.name()
        ));
        true
    }

    /// Stops (or starts again) the console's nats-server.
    fn set_broker(&self, up: bool) -> anyhow::Result<()> {
        let mut nats = self.nats.lock().unwrap();
        if up {
            nats.start_again()?;
            self.act("nats-server started".into());
        } else {
            nats.stop();
            self.act("nats-server stopped".into());
        }
        self.broker_up.store(up, Ordering::Relaxed);
        Ok(())
    }

    /// Delays every reply of the broker by `ms` (0: none).
    fn delay_broker(&self, ms: u32) {
        self.proxy.set(if ms == 0 {
            Replies::Pass
        } else {
            Replies::Delay(Duration::from_millis(u64::from(ms)))
        });
        self.broker_delay_ms.store(ms, Ordering::Relaxed);
        self.act(if ms == 0 {
            "broker replies no longer delayed".into()
        } else {
            format!("broker replies delayed by {ms} ms")
        });
    }

    /// Places one order in `mode` and follows it.
    async fn follow_one(self: &Arc<Self>, mode: Mode) -> bool {
        let Some(lane) = self.lane(mode).await else {
            return false;
        };
        let key = format!("followed-{}", Uuid::now_v7().simple());
        *lane.followed.lock().unwrap() = Some(Followed {
            key: key.clone(),
            order_id: None,
            told: "sending…".into(),
            stored: false,
            event_id: None,
            credited_points: None,
        });
        self.act(format!("placed one order in {} to follow", mode.name()));
        let placed = lane.place(key);
        tokio::task::spawn_local(async move {
            let answer = placed.await;
            if let Some(followed) = lane.followed.lock().unwrap().as_mut() {
                followed.told = answer.told;
                followed.order_id = answer.order_id;
            }
        });
        true
    }

    /// What the page shows now.
    async fn view(&self) -> View {
        let lanes = self.lanes.lock().await.clone();
        let mut views = Vec::with_capacity(lanes.len());
        for lane in lanes {
            views.push(lane.view().await);
        }
        View {
            seconds: self.started.elapsed().as_secs_f64(),
            rate: *self.rate.borrow(),
            broker_up: self.broker_up.load(Ordering::Relaxed),
            broker_delay_ms: self.broker_delay_ms.load(Ordering::Relaxed),
            lanes: views,
            actions: self.actions.lock().unwrap().iter().cloned().collect(),
        }
    }

    /// One client of `lane`: places orders at the lane's share of the
    /// rate, from the moment the rate is set until it changes.
    async fn load(self: Arc<Self>, lane: Arc<Lane>) {
        let mut rates = self.rate.subscribe();
        loop {
            let rate = *rates.borrow_and_update();
            if rate == 0 {
                if rates.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(
                f64::from(CLIENTS) / f64::from(rate),
            ));
            loop {
                tokio::select! {
                    changed = rates.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    _ = ticks.tick() => {
                        let Ok(permit) = Arc::clone(&lane.permits).acquire_owned().await else {
                            return;
                        };
                        let placed = lane.place(Uuid::now_v7().simple().to_string());
                        tokio::task::spawn_local(async move {
                            placed.await;
                            drop(permit);
                        });
                    }
                }
            }
        }
    }

    /// The supervisor and the sampler: one look at every lane. A restart
    /// takes a second or two, so the supervisor works on the side, one
    /// at a time per lane, and the view goes on.
    async fn tick(self: &Arc<Self>) {
        let lanes = self.lanes.lock().await.clone();
        for lane in lanes {
            if !lane.supervising.swap(true, Ordering::Relaxed) {
                let (console, lane) = (Arc::clone(self), Arc::clone(&lane));
                tokio::task::spawn_local(async move {
                    lane.supervise(&console).await;
                    lane.supervising.store(false, Ordering::Relaxed);
                });
            }
            lane.sample().await;
        }
    }

    async fn obey(self: &Arc<Self>, command: Command) -> Result<(), String> {
        let running = |done: bool| {
            if done {
                Ok(())
            } else {
                Err("that mode is not running: run it first".to_owned())
            }
        };
        match command {
            Command::Run { modes, rate } => {
                self.run(&modes, rate).await.map_err(|e| format!("{e:#}"))
            }
            Command::Pause => {
                self.pause();
                Ok(())
            }
            Command::Kill {
                mode,
                order_service,
            } => running(self.kill(mode, order_service).await),
            Command::Crash(mode) => running(self.arm_crash(mode).await),
            Command::Follow(mode) => running(self.follow_one(mode).await),
            Command::Broker(up) => self.set_broker(up).map_err(|e| format!("{e:#}")),
            Command::DelayBroker(ms) => {
                self.delay_broker(ms);
                Ok(())
            }
        }
    }

    /// Kills every service (the servers go with the process).
    async fn stop(&self) {
        self.rate.send_replace(0);
        for lane in self.lanes.lock().await.iter() {
            for slot in [&lane.order_service, &lane.rewards_service] {
                if let Some(mut service) = slot.lock().await.take() {
                    service.kill().await;
                }
            }
        }
    }
}

/// What the page asks the console to do.
#[derive(Debug, Clone)]
pub enum Command {
    Run { modes: Vec<Mode>, rate: u32 },
    Pause,
    Kill { mode: Mode, order_service: bool },
    Crash(Mode),
    Follow(Mode),
    Broker(bool),
    DelayBroker(u32),
}

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The console, from any thread: commands in, the view out.
///
/// The console itself runs on a thread of its own, on a single-threaded
/// runtime: starting services and reading their databases there needs no
/// `Send` futures (the harness's are not all provably so), and the load of
/// a few lanes is light.
#[derive(Clone)]
pub struct Handle {
    commands: tokio::sync::mpsc::UnboundedSender<(Command, Reply)>,
    stop: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    view: tokio::sync::watch::Receiver<Option<View>>,
}

impl Handle {
    /// Starts the console's thread, its nats-server and proxy; no lane runs yet.
    pub async fn start() -> anyhow::Result<Self> {
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel::<(Command, Reply)>();
        let (stop, mut stops) =
            tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<()>>();
        let (publish, view) = tokio::sync::watch::channel(None);
        let (ready, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(anyhow::Error::from(error)));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let console = match Console::start().await {
                        Ok(console) => {
                            let _ = ready.send(Ok(()));
                            console
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let mut ticks = tokio::time::interval(TICK);
                    loop {
                        tokio::select! {
                            stopped = stops.recv() => {
                                console.stop().await;
                                if let Some(done) = stopped {
                                    let _ = done.send(());
                                }
                                return;
                            }
                            command = inbox.recv() => {
                                let Some((command, reply)) = command else { return };
                                let console = Arc::clone(&console);
                                tokio::task::spawn_local(async move {
                                    let _ = reply.send(console.obey(command).await);
                                });
                            }
                            _ = ticks.tick() => {
                                console.tick().await;
                                publish.send_replace(Some(console.view().await));
                            }
                        }
                    }
                });
            })?;
        started.await??;
        Ok(Self {
            commands,
            stop,
            view,
        })
    }

    /// Kills every service the console started and ends the console; waits
    /// (a few seconds at most) until that is done. Blocks the thread: call
    /// it last.
    pub fn stop(&self) {
        let (done, stopped) = std::sync::mpsc::channel();
        if self.stop.send(done).is_ok() {
            let _ = stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Does `command`; the error says why it could not.
    pub async fn send(&self, command: Command) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send((command, reply))
            .map_err(|_| "the console stopped".to_owned())?;
        answer.await.map_err(|_| "the console stopped".to_owned())?
    }

    /// The latest view, once there is one; waits for the next.
    pub async fn next_view(&mut self) -> Option<View> {
        self.view.changed().await.ok()?;
        self.view.borrow_and_update().clone()
    }
}

/// Whether a service down since the time in `down` (if any) may start again.
fn restart_due(down: &std::sync::Mutex<Option<Instant>>) -> bool {
    down.lock()
        .unwrap()
        .is_none_or(|since| since.elapsed() >= RESTART_AFTER)
}

/// The crash point of a mode's "arm" button.
fn crash_point(mode: Mode) -> CrashPoint {
    if mode == Mode::SelfRead {
        CrashPoint::SelfReadAfterPublish
    } else {
        CrashPoint::AfterCommitBeforePublish
    }
}

/// What a client was told in the end.
struct Answer {
    told: String,
    order_id: Option<Uuid>,
}

impl Lane {
    async fn start(mode: Mode, nats_url: &str) -> anyhow::Result<Self> {
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
    fn place(self: &Arc<Self>, key: String) -> impl std::future::Future<Output = Answer> + 'static {
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
    /// [`RESTART_AFTER`] (looked at on each tick).
    async fn supervise(&self, console: &Console) {
        let mut orders = self.order_service.lock().await;
        if orders.as_mut().is_none_or(Service::has_exited) {
            if orders.take().is_some() {
                self.order_url.send_replace(None);
                *self.orders_down.lock().unwrap() = Some(Instant::now());
                if self.crash_armed.swap(false, Ordering::Relaxed) {
                    console.act(format!(
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

    /// Reads the databases: what was stored and credited, the lag, the audit.
    async fn sample(&self) {
        let stored: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.orders_db)
            .await
            .ok();
        let stored_before: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(AUDIT_GRACE.as_secs_f64())
        .fetch_one(&self.orders_db)
        .await
        .ok();
        let credits: Option<(i64, i64, Option<f64>, Option<f64>)> = sqlx::query_as(
            "SELECT count(*),
                    count(*) FILTER (WHERE order_placed_at < now() - make_interval(secs => $1)),
                    1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM credited_at - order_placed_at)::float8)
                        FILTER (WHERE credited_at > now() - make_interval(secs => $2)),
                    1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM credited_at - order_placed_at)::float8)
                        FILTER (WHERE credited_at > now() - make_interval(secs => $2))
             FROM reward_ledger",
        )
        .bind(AUDIT_GRACE.as_secs_f64())
        .bind(LAG_WINDOW.as_secs_f64())
        .fetch_one(&self.rewards_db)
        .await
        .ok();
        let followed = self.followed.lock().unwrap().clone();
        let followed = match followed.as_ref().and_then(|f| f.order_id.map(|id| (f, id))) {
            Some((followed, id)) => {
                let stored: Option<i64> =
                    sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
                        .bind(id)
                        .fetch_one(&self.orders_db)
                        .await
                        .ok();
                let credit: Option<(Uuid, i64)> = sqlx::query_as(
                    "SELECT event_id, points FROM reward_ledger WHERE order_id = $1",
                )
                .bind(id)
                .fetch_optional(&self.rewards_db)
                .await
                .ok()
                .flatten();
                Some(Followed {
                    stored: stored == Some(1),
                    event_id: credit.map(|(event, _)| event),
                    credited_points: credit.map(|(_, points)| points),
                    ..followed.clone()
                })
            }
            None => followed,
        };
        if let Some(followed) = followed {
            let mut slot = self.followed.lock().unwrap();
            if slot.as_ref().is_some_and(|f| f.key == followed.key) {
                *slot = Some(followed);
            }
        }
        let mut sample = self.sample.lock().unwrap();
        if let Some(stored) = stored {
            sample.stored = stored;
        }
        if let (Some(before), Some((credited, credited_before, p50, p99))) =
            (stored_before, credits)
        {
            sample.credited = credited;
            sample.without_credit = (before - credited_before).max(0);
            sample.lag_p50_ms = p50;
            sample.lag_p99_ms = p99;
        }
    }

    async fn view(&self) -> LaneView {
        let order_service_up = self
            .order_service
            .try_lock()
            .is_ok_and(|mut s| s.as_mut().is_some_and(|s| !s.has_exited()));
        let rewards_service_up = self
            .rewards_service
            .try_lock()
            .is_ok_and(|mut s| s.as_mut().is_some_and(|s| !s.has_exited()));
        let sample = self.sample.lock().unwrap().clone();
        let placed = self.placed.load(Ordering::Relaxed);
        LaneView {
            mode: self.mode.name(),
            order_service_up,
            rewards_service_up,
            crash_armed: self.crash_armed.load(Ordering::Relaxed)
                || self.crash_next.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            placed,
            // Unanswered, and answered but not credited yet.
            in_flight: i64::try_from(placed + self.sending.load(Ordering::Relaxed))
                .unwrap_or(i64::MAX)
                - sample.credited,
            sample,
            followed: self.followed.lock().unwrap().clone(),
        }
    }
}

/// Stops the console when dropped, however the scope is left (a test's
/// panic included): no service outlives it.
pub struct StopOnDrop(pub Handle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `order-events console`: starts the world, serves the page on `listen`,
/// runs `modes` at `rate` right away when given, and keeps going until
/// ctrl-c or SIGTERM, which stop every service it started.
pub async fn main(listen: std::net::SocketAddr, modes: &[Mode], rate: u32) -> anyhow::Result<()> {
    eprintln!("starting a private PostgreSQL and nats-server…");
    let console = Handle::start().await?;
    let address = web::serve(console.clone(), listen).await?;
    if !modes.is_empty() {
        let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
        eprintln!("starting {}…", names.join(", "));
        console
            .send(Command::Run {
                modes: modes.to_vec(),
                rate,
            })
            .await
            .map_err(anyhow::Error::msg)?;
    }
    println!("order-events console: http://{address}/  (ctrl-c to stop everything)");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the services…");
    tokio::task::block_in_place(|| console.stop());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::{ConsoleMode, MODES};

    #[test]
    fn the_command_line_offers_the_modes_the_page_shows_by_their_names() {
        let names: Vec<String> = ConsoleMode::value_variants()
            .iter()
            .filter_map(ConsoleMode::to_possible_value)
            .map(|value| value.get_name().to_owned())
            .collect();
        assert_eq!(names, MODES.map(|mode| mode.name()));
    }
}
