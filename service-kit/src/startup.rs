use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable as _};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

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
/// including when the server is not up yet.
pub async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// Backoff for reconnecting to a dependency: from 100 ms, doubling up to
/// `max`, with jitter so that instances restarted together do not retry in
/// step; never gives up by itself.
pub fn backoff(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Retries `attempt` with [`backoff`] until it succeeds or `deadline` passes.
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
    attempt
        .retry(backoff(Duration::from_secs(2)))
        .sleep(tokio::time::sleep)
        .when(|_| Instant::now() < deadline)
        .notify(|error, pause| tracing::warn!(%error, "{what} failed; retrying in {pause:?}"))
        .await
        .map_err(|error| error.into().context(what.to_owned()))
}
