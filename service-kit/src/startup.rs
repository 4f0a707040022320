use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
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

/// Retries `attempt` with a growing pause until it succeeds or `deadline` passes.
pub async fn retry_until<T, E, F, Fut>(
    deadline: Instant,
    what: &str,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: std::fmt::Display + Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() + pause < deadline => {
                tracing::warn!(%error, "{what} failed; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => return Err(error.into().context(what.to_owned())),
        }
    }
}
