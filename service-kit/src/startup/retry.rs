//! Retrying a dependency that does not answer: a jittered exponential
//! backoff that never gives up by itself, and retries bounded by a
//! deadline, for start-up and for the loops that reconnect on their own.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder, Retryable as _};
use tokio::time::Instant;

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
