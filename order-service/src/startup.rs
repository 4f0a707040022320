use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use service_kit::startup::{connect_database, connect_nats, retry_until};
use shared_events::{Names, StreamSettings};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::patterns::{Deps, Pattern, Worker, WorkerSettings};

/// A built order-service: connected, migrated, bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    worker: Option<Worker>,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (running migrations) and NATS (creating the
    /// streams), waiting up to `startup_timeout` for either, then binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::install_metrics()?;
        let names = Names::new(&config.events_prefix)?;
        let deadline = Instant::now() + config.startup_timeout;

        let pool =
            connect_database(&config.database_url, config.db_max_connections, deadline).await?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .context("running order-service migrations")?;

        let nats = connect_nats(&config.nats_url, "order-service").await?;
        let jetstream = async_nats::jetstream::new(nats.clone());
        let settings = StreamSettings {
            duplicate_window: config.duplicate_window,
        };
        retry_until(deadline, "creating the JetStream streams", || {
            shared_events::jetstream::ensure_streams(&jetstream, &names, &settings)
        })
        .await?;

        let deps = Deps {
            pool: pool.clone(),
            nats: nats.clone(),
            jetstream: jetstream.clone(),
            names: names.clone(),
        };
        let workers = WorkerSettings {
            outbox_relay: config.outbox_relay,
            database_url: config.database_url.clone(),
            cdc_slot: config.cdc_slot.clone(),
            cdc_heartbeat_interval: config.cdc_heartbeat_interval,
            cdc_max_in_flight: config.cdc_max_in_flight,
            relay_batch_size: config.relay_batch_size,
            relay_poll_interval: config.relay_poll_interval,
            publish_timeout: config.publish_timeout,
            consumer_ack_wait: config.consumer_ack_wait,
            consumer_max_deliver: config.consumer_max_deliver,
            startup_deadline: deadline,
        };
        let (pattern, worker) = Pattern::new(config.mode, deps, workers).await?;

        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        tracing::info!(mode = config.mode.name(), "order-service ready");
        Ok(Self {
            listener,
            worker,
            state: AppState {
                pattern: Arc::new(pattern),
                pool,
                nats,
                jetstream,
                names,
                metrics,
                max_order_total_minor: config.max_order_total_minor,
            },
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves HTTP and runs the mode's worker until `shutdown` completes; then
    /// stops taking requests, lets in-flight ones finish, and waits for the
    /// worker to finish its batch in hand.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        // A worker that cannot go on safely (a lost replication slot, say)
        // stops the whole service with its error.
        let fatal = Arc::new(Mutex::new(None));
        if let Some(worker) = self.worker {
            let (run, stop, fatal) = (worker(stop.child_token()), stop.clone(), fatal.clone());
            tasks.spawn(async move {
                if let Err(error) = run.await {
                    tracing::error!(error = format!("{error:#}"), "stopping order-service");
                    *fatal.lock().expect("fatal lock") = Some(error);
                    stop.cancel();
                }
            });
        }

        tracing::info!(%addr, "listening on http://{addr}");
        let serve_stop = stop.clone();
        let served = axum::serve(self.listener, http::router(self.state))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = shutdown => {}
                    () = serve_stop.cancelled() => {}
                }
            })
            .await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!("order-service stopped");
        if let Some(error) = fatal.lock().expect("fatal lock").take() {
            return Err(error);
        }
        served.context("serving HTTP")
    }
}
