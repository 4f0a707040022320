//! When a `GET /orders/{id}?wait=` reader looks again for an order that was
//! not there: when the pattern's [`Watch`] says it may have been stored
//! (self-read announces the orders its projector stores), once more at the
//! reader's deadline, and at once when the process stops — so a wait never
//! holds up a shutdown. Without a watch (every other mode stores the order
//! before answering its request), the reader looks at its deadline only.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::patterns::Watch;

/// One reader's schedule of looks.
pub struct Waiter {
    deadline: Instant,
    watch: Option<Box<dyn Watch>>,
    /// Cancelled when the process stops.
    stopping: CancellationToken,
}

/// What a waiter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look at the database again.
    Look,
    /// The deadline has passed: no more looks.
    GiveUp,
    /// The process is stopping: look a last time, then answer at once.
    LookLastTime,
}

impl Waiter {
    /// A waiter until `deadline`; `watch` is registered before the first
    /// look, so that nothing stored after that look goes unannounced.
    pub fn new(
        deadline: Instant,
        watch: Option<Box<dyn Watch>>,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            deadline,
            watch,
            stopping,
        }
    }

    /// Waits until another look at the database is worth it.
    pub async fn next(&mut self) -> Next {
        if Instant::now() >= self.deadline {
            return Next::GiveUp;
        }
        let Self {
            deadline,
            watch,
            stopping,
        } = self;
        let announced = async {
            match watch {
                Some(watch) => watch.announced().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(*deadline) => Next::Look,
            () = announced => Next::Look,
            () = stopping.cancelled() => Next::LookLastTime,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::future::BoxFuture;
    use tokio::sync::Notify;

    use super::*;

    struct Announced(Arc<Notify>);

    impl Watch for Announced {
        fn announced(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(self.0.notified())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_looks_when_announced_and_at_its_deadline() {
        let wake = Arc::new(Notify::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        let watch = Box::new(Announced(wake.clone()));
        let mut waiter = Waiter::new(deadline, Some(watch), CancellationToken::new());

        wake.notify_one();
        assert_eq!(waiter.next().await, Next::Look);
        assert!(Instant::now() < deadline);

        assert_eq!(waiter.next().await, Next::Look);
        assert_eq!(Instant::now(), deadline);
        assert_eq!(waiter.next().await, Next::GiveUp);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watch_a_waiter_looks_at_its_deadline_only() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut waiter = Waiter::new(deadline, None, CancellationToken::new());
        assert_eq!(waiter.next().await, Next::Look);
        assert_eq!(Instant::now(), deadline);
        assert_eq!(waiter.next().await, Next::GiveUp);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_process_lets_every_waiter_answer_at_once() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let stopping = CancellationToken::new();
        let mut waiters: Vec<_> = (0..3)
            .map(|_| Waiter::new(deadline, None, stopping.clone()))
            .collect();
        stopping.cancel();
        for waiter in &mut waiters {
            assert_eq!(waiter.next().await, Next::LookLastTime);
        }
        assert!(Instant::now() < deadline);
    }
}
