//! Bounded waits on a condition the system reaches in its own time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long a test (or a tool) waits for the system to converge.
pub const CONVERGE: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, or gives up after `timeout` with
/// `None`: for a condition that may rightly never hold.
pub async fn within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}
