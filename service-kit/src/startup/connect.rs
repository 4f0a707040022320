//! Connecting at start-up: PostgreSQL (then the migrations), NATS, and the
//! streams, each waited for up to `STARTUP_TIMEOUT`, since the servers may
//! come up after the service; and the NATS client of a one-off command,
//! which does not wait.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared_events::jetstream::Publisher;
use shared_events::{Names, StreamSettings};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use super::{Core, ServiceArgs, retry_until, retry_until_unless};

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
