//! The console's world: its nats-server and the proxy in front of it, its
//! lanes, the load each lane's clients place, and what the page's buttons
//! do to them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use harness::Mode;
use harness::proxy::{BrokerProxy, Replies};
use harness::servers::Nats;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use super::lane::{Lane, crash_point};
use super::view::{Followed, View};
use super::{Command, MODES};

/// Clients per lane; they share the lane's rate.
const CLIENTS: u32 = 4;

/// The console's world; cheap to share.
pub(super) struct Console {
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

impl Console {
    pub(super) async fn start() -> anyhow::Result<Arc<Self>> {
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

    pub(super) fn act(&self, action: String) {
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
    pub(super) async fn view(&self) -> View {
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
    pub(super) async fn tick(self: &Arc<Self>) {
        let lanes = self.lanes.lock().await.clone();
        for lane in lanes {
            if !lane.supervising.swap(true, Ordering::Relaxed) {
                let (console, lane) = (Arc::clone(self), Arc::clone(&lane));
                tokio::task::spawn_local(async move {
                    lane.supervise(|action| console.act(action)).await;
                    lane.supervising.store(false, Ordering::Relaxed);
                });
            }
            lane.sample().await;
        }
    }

    pub(super) async fn obey(self: &Arc<Self>, command: Command) -> Result<(), String> {
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
    pub(super) async fn stop(&self) {
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
