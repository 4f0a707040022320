use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use service_kit::limits::Limits;
use service_kit::serve::Listeners;
use service_kit::startup::Connected;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::patterns::{self, Deps, Started, Worker};

/// A built order-service: connected, migrated, bound, not yet serving.
pub struct Application {
    /// Cancelled to stop the worker, the listeners and everything else.
    stop: CancellationToken,
    listeners: Listeners,
    limits: Limits,
    worker: Option<Worker>,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (running migrations) and NATS (creating the
    /// streams), waiting up to `startup_timeout` for either, then binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let Connected { core, deadline } =
            service_kit::startup::connect(&config.service, "order-service", &sqlx::migrate!())
                .await?;

        let deps = Deps {
            pool: core.pool.clone(),
            database_url: config.service.database_url.clone(),
            nats: core.nats.clone(),
            jetstream: core.jetstream.clone(),
            publisher: core.publisher.clone(),
            names: core.names.clone(),
            startup_deadline: deadline,
        };
        let stop = CancellationToken::new();
        let Started { write, worker } =
            patterns::start(config.mode, deps, &config.patterns, stop.child_token()).await?;
        let listeners =
            Listeners::bind(config.listen_addr, config.service.http.admin_listen_addr).await?;
        tracing::info!(mode = config.mode.name(), "order-service ready");
        Ok(Self {
            listeners,
            limits: Limits::new(&config.service.http),
            worker,
            state: AppState {
                write: Arc::from(write),
                core,
                max_order_total_minor: config.max_order_total_minor,
                stopping: stop.child_token(),
                max_wait: AppState::max_wait_for(config.service.http.request_timeout),
                place_timeout: AppState::place_timeout_for(config.service.http.request_timeout),
            },
            stop,
        })
    }

    /// Serves HTTP and runs the mode's worker until `shutdown` completes; then
    /// stops taking requests, lets in-flight ones finish, and waits for the
    /// worker to finish its batch in hand.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = self.stop;
        let tasks = TaskTracker::new();
        // A worker that cannot go on safely (a lost replication slot, say)
        // ends with an error, which stops the whole service and is returned.
        let worker = self.worker.map(|worker| {
            let stop = stop.clone();
            tasks.spawn(async move {
                let result = worker.await;
                match &result {
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "stopping order-service");
                    }
                    Ok(()) if !stop.is_cancelled() => {
                        tracing::error!("the pattern's worker ended; stopping order-service");
                    }
                    Ok(()) => {}
                }
                stop.cancel();
                result
            })
        });

        let routers = http::routers(self.state, &self.limits, self.listeners.has_admin());
        let served = self
            .listeners
            .run_until_stopped(routers, stop, tasks, shutdown)
            .await;
        tracing::info!("order-service stopped");
        if let Some(worker) = worker {
            worker.await.context("the worker panicked")??;
        }
        served
    }
}
