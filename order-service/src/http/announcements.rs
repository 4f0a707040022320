//! Wakes `GET /orders/{id}?wait=` readers without polling: ONE `LISTEN` per
//! process on the projector's channel, and an in-process registry of waiters
//! by order id, so an announcement wakes the waiters of its ids and no others.
//!
//! Guarantee: a waiter sees its order no later than one look after the
//! COMMIT that stored it. It registers before its first look, so an order
//! committed after that look is announced to it; it looks again only when its
//! own id is announced, when announcements may have been missed (the
//! listener reconnected), and once more at its deadline — so a lost
//! notification delays an answer to the deadline, never loses it. When the
//! process stops, every waiter looks once more and answers at once, so a
//! wait never holds up a shutdown.
//! Orders stored by the request itself (every mode but self-read) are not
//! announced: a waiter for one finds it on its first look or at its deadline.
//!
//! Why a registry rather than a broadcast to every waiter: a broadcast wakes
//! each of N waiters on every projected batch, N × batches wake-ups a second
//! for nothing; with 500 waiters that cost placement 13–15 % in the
//! benchmark. The registry's cost is a map lookup per announced id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::projected;

const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The registry, cloned into every request.
#[derive(Clone, Default)]
pub struct Announcements {
    waiting: Arc<Mutex<Waiting>>,
    /// Cancelled when the listener stops: the process is shutting down.
    stopping: CancellationToken,
}

/// Who waits for which order; each waiter has a key to remove itself by.
#[derive(Default)]
struct Waiting {
    by_order: HashMap<Uuid, Vec<(u64, Arc<Notify>)>>,
    next_key: u64,
}

impl Announcements {
    /// A waiter for `id` until `deadline`, registered from now on.
    pub fn waiter(&self, id: Uuid, deadline: Instant) -> Waiter {
        let wake = Arc::new(Notify::new());
        let mut waiting = lock(&self.waiting);
        let key = waiting.next_key;
        waiting.next_key += 1;
        waiting
            .by_order
            .entry(id)
            .or_default()
            .push((key, wake.clone()));
        Waiter {
            id,
            key,
            deadline,
            wake,
            waiting: self.waiting.clone(),
            stopping: self.stopping.clone(),
        }
    }

    /// Connects the process's one listener (at start-up, where the database
    /// is known to answer); [`Listener::run`] then forwards until stopped.
    pub async fn listen(&self, database_url: &str) -> anyhow::Result<Listener> {
        Ok(Listener {
            database_url: database_url.to_owned(),
            waiting: self.waiting.clone(),
            stopping: self.stopping.clone(),
            listener: Some(connect(database_url).await?),
        })
    }
}

fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    // The registry stays consistent under a panic (each step is one
    // insert or remove), so a poisoned lock is still good.
    waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn connect(database_url: &str) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect(database_url)
        .await
        .context("connecting the listener of projected orders")?;
    listener
        .listen(projected::CHANNEL)
        .await
        .context("listening for projected orders")?;
    Ok(listener)
}

/// The one `LISTEN` connection of the process.
pub struct Listener {
    database_url: String,
    waiting: Arc<Mutex<Waiting>>,
    stopping: CancellationToken,
    listener: Option<PgListener>,
}

impl Listener {
    /// Wakes the waiters of each announced id until `stop`; reconnects when
    /// the connection is lost, and then wakes every waiter to look again.
    /// When it returns, every waiter is told that the process is stopping.
    pub async fn run(mut self, stop: CancellationToken) {
        let _stopping = self.stopping.clone().drop_guard();
        loop {
            let Some(listener) = &mut self.listener else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
                // Connecting waits while the server refuses: stop may not.
                let connected = tokio::select! {
                    () = stop.cancelled() => return,
                    connected = connect(&self.database_url) => connected,
                };
                match connected {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.wake_all();
                    }
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "reconnecting"),
                }
                continue;
            };
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => self.wake(&projected::parse(notification.payload())),
                // The connection was lost and made again: what was
                // notified in between is gone.
                Ok(None) => self.wake_all(),
                Err(error) => {
                    tracing::warn!(%error, "the listener of projected orders failed");
                    self.listener = None;
                    self.wake_all();
                }
            }
        }
    }

    fn wake(&self, ids: &[Uuid]) {
        let waiting = lock(&self.waiting);
        for id in ids {
            for (_, wake) in waiting.by_order.get(id).into_iter().flatten() {
                wake.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        for (_, wake) in lock(&self.waiting).by_order.values().flatten() {
            wake.notify_one();
        }
    }
}

/// One `?wait` reader's registration; dropping it unregisters.
pub struct Waiter {
    id: Uuid,
    key: u64,
    deadline: Instant,
    wake: Arc<Notify>,
    waiting: Arc<Mutex<Waiting>>,
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
    /// Waits until another look at the database is worth it: the id was
    /// announced (also while the last look was under way), announcements
    /// were missed, the deadline came, or the process is stopping.
    pub async fn next(&mut self) -> Next {
        if Instant::now() >= self.deadline {
            return Next::GiveUp;
        }
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => Next::Look,
            () = self.wake.notified() => Next::Look,
            () = self.stopping.cancelled() => Next::LookLastTime,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiting);
        if let Some(waiters) = waiting.by_order.get_mut(&self.id) {
            waiters.retain(|(key, _)| *key != self.key);
            if waiters.is_empty() {
                waiting.by_order.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_woken_by_its_own_id_and_by_its_deadline_only() {
        let announcements = Announcements::default();
        let listener = Listener {
            database_url: String::new(),
            waiting: announcements.waiting.clone(),
            stopping: announcements.stopping.clone(),
            listener: None,
        };
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut waiter = announcements.waiter(mine, deadline);

        // Announced while it was looking: the next wait returns at once.
        listener.wake(&[other, mine]);
        assert_eq!(waiter.next().await, Next::Look);
        assert!(Instant::now() < deadline);

        listener.wake(&[other]);
        assert_eq!(waiter.next().await, Next::Look);
        assert_eq!(Instant::now(), deadline, "another id does not wake it");
        assert_eq!(waiter.next().await, Next::GiveUp);

        drop(waiter);
        assert!(lock(&announcements.waiting).by_order.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn missed_announcements_wake_every_waiter() {
        let announcements = Announcements::default();
        let listener = Listener {
            database_url: String::new(),
            waiting: announcements.waiting.clone(),
            stopping: announcements.stopping.clone(),
            listener: None,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut waiters: Vec<_> = (0..3)
            .map(|_| announcements.waiter(Uuid::now_v7(), deadline))
            .collect();
        listener.wake_all();
        for waiter in &mut waiters {
            assert_eq!(waiter.next().await, Next::Look);
        }
        assert!(Instant::now() < deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_listener_lets_every_waiter_answer_at_once() {
        let announcements = Announcements::default();
        let listener = Listener {
            database_url: String::new(),
            waiting: announcements.waiting.clone(),
            stopping: announcements.stopping.clone(),
            listener: None,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut waiter = announcements.waiter(Uuid::now_v7(), deadline);
        let stop = CancellationToken::new();
        stop.cancel();
        listener.run(stop).await;
        assert_eq!(waiter.next().await, Next::LookLastTime);
        assert!(Instant::now() < deadline);
    }
}
