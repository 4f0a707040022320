use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use service_kit::limits::Limits;
use service_kit::serve::Listeners;
use service_kit::startup::{connect_database, connect_nats, retry_until};
use shared_events::{Names, StreamSettings};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::consumer::Credits;
use crate::http::{self, AppState};
use service_kit::consumer::{ConsumerSettings, EventConsumer};

/// A built rewards-service: connected, migrated, bound, not yet serving.
pub struct Application {
    listeners: Listeners,
    limits: Limits,
    consumer: EventConsumer<Credits>,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (running migrations) and NATS (creating the
    /// streams), waiting up to `startup_timeout` for either, then binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::install_metrics()?;
        let names = Names::new(&config.events_prefix)?;
        let deadline = Instant::now() + config.startup_timeout;

        let pool = connect_database(
            &config.database_url,
            config.db_max_connections,
            config.db_acquire_timeout,
            deadline,
        )
        .await?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .context("running rewards-service migrations")?;

        let nats = connect_nats(&config.nats_url, "rewards-service").await?;
        let jetstream = async_nats::jetstream::new(nats.clone());
        let settings = StreamSettings {
            duplicate_window: config.duplicate_window,
        };
        retry_until(deadline, "creating the JetStream streams", || {
            shared_events::jetstream::ensure_streams(&jetstream, &names, &settings)
        })
        .await?;

        let consumer = EventConsumer::new(
            jetstream.clone(),
            names.clone(),
            ConsumerSettings {
                durable: names.rewards_consumer(),
                batch: config.consumer_batch,
                ack_wait: config.consumer_ack_wait,
                max_deliver: config.consumer_max_deliver,
                crash_point: "consumer_after_commit_before_ack",
                fault_point: "consumer_apply_fails",
            },
            Credits::new(pool.clone()),
        );
        retry_until(deadline, "creating the rewards consumer", || async {
            consumer.ensure().await.map(drop)
        })
        .await?;

        let listeners = Listeners::bind(config.listen_addr, config.http.admin_listen_addr).await?;
        tracing::info!("rewards-service ready");
        Ok(Self {
            listeners,
            limits: Limits::new(&config.http),
            consumer,
            state: AppState {
                pool,
                nats,
                jetstream,
                names,
                metrics,
            },
        })
    }

    /// The public address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.public_addr()
    }

    /// The admin address actually bound, if `ADMIN_LISTEN_ADDR` is set.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.listeners.admin_addr()
    }

    /// Serves HTTP and runs the consumer until `shutdown` completes; then
    /// stops taking requests, lets in-flight ones finish, and waits for the
    /// consumer to finish the messages in hand.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(self.consumer.run(stop.child_token()));
        let on_signal = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown => on_signal.cancel(),
                () = on_signal.cancelled() => {}
            }
        });
        let routers = http::routers(self.state, &self.limits, self.listeners.has_admin());
        let served = self.listeners.serve(routers, stop.clone()).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!("rewards-service stopped");
        served
    }
}
