use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder, Retryable as _};
use futures::TryStreamExt as _;
use shared_events::jetstream::Publisher;
use shared_events::{Names, StreamSettings};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::limits::HttpSettings;
use crate::telemetry::PrometheusHandle;

/// The settings every service of the workspace takes (flattened into each
/// service's `Config`, beside what is its own).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// PostgreSQL database owned by the service.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// NATS server, or a comma-separated list of a cluster's servers (the
    /// client connects to one and fails over to the others).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Copies of each stream on a NATS cluster (3 on three nodes), and of
    /// each durable consumer. Applied at start-up, also to a stream or
    /// consumer that exists with another count.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// Prefix of stream and subject names, to share one NATS between
    /// deployments; both services must use the same.
    #[arg(long, env = "EVENTS_PREFIX", default_value = "")]
    pub events_prefix: String,
    /// JetStream's duplicate window of both streams; an existing stream with a
    /// shorter one is raised to it at start-up.
    #[arg(long, env = "DUPLICATE_WINDOW", default_value = "2m", value_parser = crate::duration::parse)]
    pub duplicate_window: Duration,
    /// Publish what is already a batch (a relay's claimed rows, the CDC
    /// reader's committed transactions) as one atomic batch where the server
    /// takes them (nats-server 2.12+); `false` publishes message by message.
    #[arg(long, env = "ATOMIC_BATCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub atomic_batches: bool,
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a database connection before it is
    /// answered 503 `database_unavailable` (pool exhausted or database down).
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse)]
    pub db_acquire_timeout: Duration,
    /// How long to wait for the database and NATS at start-up.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse)]
    pub startup_timeout: Duration,
    /// Request timeout, concurrency cap and admin listener.
    #[command(flatten)]
    pub http: HttpSettings,
}

/// What a service has once it is connected: its migrated database, NATS
/// with the streams in place, and the metrics recorder.
#[derive(Clone)]
pub struct Core {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    /// Publishes in batches where the stream takes them.
    pub publisher: Publisher,
    pub names: Names,
    pub metrics: PrometheusHandle,
    /// The durable consumers `/metrics` reported last.
    pub reported_consumers: Arc<Mutex<BTreeSet<String>>>,
}

/// How long `/metrics` waits for one answer of the broker or the database
/// before it renders without it (the gauge keeps its last value).
const GAUGE_TIMEOUT: Duration = Duration::from_secs(2);

impl Core {
    /// Reads, for every durable consumer of the order stream, the broker's
    /// count of messages not yet delivered and of those awaiting their ack,
    /// and the dead-letter stream's depth, into their gauges. Each service
    /// reports every consumer, so that a consumer whose service is down is
    /// still seen falling behind. What cannot be read in time keeps its
    /// last value.
    pub async fn refresh_broker_gauges(&self) {
        let consumers = tokio::time::timeout(GAUGE_TIMEOUT, async {
            let stream = self
                .jetstream
                .get_stream_no_info(self.names.stream())
                .await?;
            let consumers: Vec<_> = stream.consumers().try_collect().await?;
            Ok::<_, anyhow::Error>(consumers)
        })
        .await;
        match consumers {
            Ok(Ok(consumers)) => {
                let durable: BTreeSet<String> = consumers
                    .iter()
                    .filter(|info| info.config.durable_name.is_some())
                    .map(|info| info.name.clone())
                    .collect();
                for info in consumers.iter().filter(|info| durable.contains(&info.name)) {
                    crate::meters::consumer_backlog(
                        &info.name,
                        info.num_pending,
                        info.num_ack_pending,
                    );
                }
                // A consumer that was deleted has no backlog left to report.
                let mut reported = self
                    .reported_consumers
                    .lock()
                    .expect("reported consumers lock");
                for gone in reported.difference(&durable) {
                    crate::meters::consumer_backlog(gone, 0, 0);
                }
                *reported = durable;
            }
            Ok(Err(error)) => tracing::debug!(%error, "reading the consumers' backlog"),
            Err(_) => tracing::debug!("reading the consumers' backlog timed out"),
        }
        let depth = tokio::time::timeout(GAUGE_TIMEOUT, async {
            let mut stream = self
                .jetstream
                .get_stream(self.names.dead_letter_stream())
                .await?;
            Ok::<_, anyhow::Error>(stream.info().await?.state.messages)
        })
        .await;
        match depth {
            Ok(Ok(messages)) => crate::meters::dead_letters(messages),
            Ok(Err(error)) => tracing::debug!(%error, "reading the dead-letter stream's depth"),
            Err(_) => tracing::debug!("reading the dead-letter stream's depth timed out"),
        }
    }

    /// A core whose database and NATS server cannot be reached (port 1),
    /// for in-process tests of what must be answered before either is used:
    /// a request that gets past its checks fails or hangs instead of passing.
    pub async fn unreachable() -> Self {
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a client that connects in the background");
        Self {
            pool: PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(1))
                .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
                .expect("a valid URL"),
            jetstream: async_nats::jetstream::new(nats.clone()),
            publisher: Publisher::new(nats.clone(), false),
            nats,
            names: Names::new("unreachable").expect("a valid prefix"),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            reported_consumers: Arc::default(),
        }
    }
}

/// [`Core`], and when start-up gives up.
pub struct Connected {
    pub core: Core,
    pub deadline: Instant,
}

/// Installs the metrics recorder, connects to PostgreSQL and runs
/// `migrations`, connects to NATS as `name` and creates the streams —
/// waiting up to `STARTUP_TIMEOUT` for the servers.
pub async fn connect(
    args: &ServiceArgs,
    name: &str,
    migrations: &Migrator,
) -> anyhow::Result<Connected> {
    let metrics = crate::telemetry::install_metrics()?;
    let names = Names::new(&args.events_prefix)?;
    let deadline = Instant::now() + args.startup_timeout;
    let pool = connect_database(
        &args.database_url,
        args.db_max_connections,
        args.db_acquire_timeout,
        deadline,
    )
    .await?;
    migrations
        .run(&pool)
        .await
        .with_context(|| format!("running {name} migrations"))?;
    let nats = connect_nats(&args.nats_url, name).await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let streams = StreamSettings {
        duplicate_window: args.duplicate_window,
        replicas: usize::from(args.stream_replicas),
        atomic_batches: args.atomic_batches,
    };
    // A stream whose settings would lose events stays so until an operator
    // changes it: refused at once, not retried until the deadline.
    let features = retry_until_unless(
        deadline,
        "creating the JetStream streams",
        || shared_events::jetstream::ensure_streams(&jetstream, &names, &streams),
        shared_events::jetstream::StreamSetupError::is_refused,
    )
    .await?;
    tracing::info!(
        server = %nats.server_info().version,
        atomic_batches = features.atomic_batches,
        "JetStream streams ready"
    );
    let publisher = Publisher::new(nats.clone(), features.atomic_batches);
    Ok(Connected {
        core: Core {
            pool,
            nats,
            jetstream,
            publisher,
            names,
            metrics,
            reported_consumers: Arc::default(),
        },
        deadline,
    })
}

/// A pool for `url`, once the database answers (or an error at `deadline`).
/// A request waits at most `acquire_timeout` for a connection, then fails
/// with `PoolTimedOut` (a 503: the pool is exhausted or the database is down).
pub async fn connect_database(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    deadline: Instant,
) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy(url)
        .context("parsing DATABASE_URL")?;
    retry_until(deadline, "connecting to PostgreSQL", || async {
        pool.acquire().await.map(drop)
    })
    .await?;
    Ok(pool)
}

/// A NATS client that keeps reconnecting for as long as the process lives,
/// including when the server is not up yet. `urls` is one server or a
/// comma-separated list of a cluster's; the client picks one and fails
/// over to the others (and to those the cluster announces).
pub async fn connect_nats(urls: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let servers = nats_servers(urls)?;
    async_nats::ConnectOptions::new()
        .name(name)
        // A server that is cut off or stalled sends nothing, not even a
        // close: two unanswered pings mark the connection dead and the
        // client moves to another server (the default, a minute between
        // pings, leaves it on the dead one for minutes).
        .ping_interval(NATS_PING_INTERVAL)
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))
}

/// A NATS client for a command: like [`connect_nats`], but an error at once
/// when no server of `urls` answers.
pub async fn connect_nats_once(urls: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connect(nats_servers(urls)?)
        .await
        .with_context(|| format!("connecting to NATS at {urls}"))
}

/// How often the services ping their NATS server.
const NATS_PING_INTERVAL: Duration = Duration::from_secs(5);

/// The servers of `NATS_URL`: one URL or a comma-separated list.
pub fn nats_servers(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .with_context(|| format!("NATS_URL: {url:?} is not a server address"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!servers.is_empty(), "NATS_URL names no server");
    Ok(servers)
}

/// Backoff for reconnecting to a dependency: from 100 ms, doubling up to
/// `max`, plus a random jitter of up to as much again, so that instances
/// restarted together do not retry in step; never gives up by itself.
pub fn backoff(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// The pauses of [`backoff`], one per failure in a row, for loops that
/// retry on their own (start again with a new one after a success).
pub fn pauses(max: Duration) -> impl Iterator<Item = Duration> + Send {
    backoff(max).build()
}

/// Retries `attempt` with [`backoff`] until it succeeds or `deadline` has
/// passed (checked before each pause, so the last pause may end past it).
pub async fn retry_until<T, E, F, Fut>(
    deadline: Instant,
    what: &str,
    attempt: F,
) -> anyhow::Result<T>
where
    E: std::fmt::Display + Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_until_unless(deadline, what, attempt, |_| false).await
}

/// [`retry_until`], but an error for which `permanent` holds is returned at
/// once.
pub async fn retry_until_unless<T, E, F, Fut>(
    deadline: Instant,
    what: &str,
    attempt: F,
    permanent: impl Fn(&E) -> bool,
) -> anyhow::Result<T>
where
    E: std::fmt::Display + Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    attempt
        .retry(backoff(Duration::from_secs(2)))
        .sleep(tokio::time::sleep)
        .when(|error| !permanent(error) && Instant::now() < deadline)
        .notify(|error, pause| tracing::warn!(%error, "{what} failed; retrying in {pause:?}"))
        .await
        .map_err(|error| error.into().context(what.to_owned()))
}
