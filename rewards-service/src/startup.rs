use std::future::Future;

use service_kit::limits::Limits;
use service_kit::serve::Listeners;
use service_kit::startup::{Connected, retry_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::consumer::Credits;
use crate::http::{self, AppState};
use service_kit::consumer::EventConsumer;

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
        let Connected { core, deadline } =
            service_kit::startup::connect(&config.service, "rewards-service", &sqlx::migrate!())
                .await?;

        let consumer = EventConsumer::new(
            core.jetstream.clone(),
            core.names.clone(),
            config.consumer.settings(
                core.names.rewards_consumer(),
                "consumer_after_commit_before_ack",
                "consumer_apply_fails",
            ),
            Credits::new(core.pool.clone()),
        );
        retry_until(deadline, "creating the rewards consumer", || async {
            consumer.ensure().await.map(drop)
        })
        .await?;

        let listeners =
            Listeners::bind(config.listen_addr, config.service.http.admin_listen_addr).await?;
        tracing::info!("rewards-service ready");
        Ok(Self {
            listeners,
            limits: Limits::new(&config.service.http),
            consumer,
            state: AppState { core },
        })
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
        let routers = http::routers(self.state, &self.limits, self.listeners.has_admin());
        let served = self
            .listeners
            .run_until_stopped(routers, stop, tasks, shutdown)
            .await;
        tracing::info!("rewards-service stopped");
        served
    }
}
