//! Wakes `GET /orders/{id}?wait=` readers without polling: ONE `LISTEN` per
//! process on the projector's channel, and an in-process registry of watches
//! by order id, so an announcement wakes the watches of its ids and no others.
//!
//! Guarantee: a reader sees its order no later than one look after the
//! COMMIT that stored it. Its watch is registered before its first look, so
//! an order committed after that look is announced to it; it looks again
//! only when its own id is announced, when announcements may have been
//! missed (the listener reconnected), and once more at its deadline — so a
//! lost notification delays an answer to the deadline, never loses it (the
//! deadline and the shutdown are the reader's, in `http`).
//!
//! Why a registry rather than a broadcast to every reader: a broadcast wakes
//! each of N readers on every projected batch, N × batches wake-ups a second
//! for nothing; with 500 readers that cost placement 13–15 % in the
//! benchmark. The registry's cost is a map lookup per announced id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sql as projected;
use crate::patterns::Watch;

const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The registry, shared by the write path and the listener.
#[derive(Clone, Default)]
pub struct Announcements {
    waiting: Arc<Mutex<Waiting>>,
}

/// Who waits for which order; each waiter has a key to remove itself by.
#[derive(Default)]
struct Waiting {
    by_order: HashMap<Uuid, Vec<(u64, Arc<Notify>)>>,
    next_key: u64,
}

impl Announcements {
    /// A watch on `id`, registered from now on.
    pub fn watch(&self, id: Uuid) -> Registration {
        let wake = Arc::new(Notify::new());
        let mut waiting = lock(&self.waiting);
        let key = waiting.next_key;
        waiting.next_key += 1;
        waiting
            .by_order
            .entry(id)
            .or_default()
            .push((key, wake.clone()));
        Registration {
            id,
            key,
            wake,
            waiting: self.waiting.clone(),
        }
    }

    /// Connects the process's one listener (at start-up, where the database
    /// is known to answer); [`Listener::run`] then forwards until stopped.
    pub async fn listen(&self, database_url: &str) -> anyhow::Result<Listener> {
        Ok(Listener {
            database_url: database_url.to_owned(),
            waiting: self.waiting.clone(),
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
    listener: Option<PgListener>,
}

impl Listener {
    /// Wakes the watches of each announced id until `stop`; reconnects when
    /// the connection is lost, and then wakes every watch to look again.
    pub async fn run(mut self, stop: CancellationToken) {
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

/// One `?wait` reader's watch; dropping it unregisters.
pub struct Registration {
    id: Uuid,
    key: u64,
    wake: Arc<Notify>,
    waiting: Arc<Mutex<Waiting>>,
}

impl Watch for Registration {
    /// An announcement while the reader was looking is kept: the next call
    /// returns at once.
    fn announced(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.wake.notified())
    }
}

impl Drop for Registration {
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
    use std::time::Duration;

    use super::*;

    fn listener(announcements: &Announcements) -> Listener {
        Listener {
            database_url: String::new(),
            waiting: announcements.waiting.clone(),
            listener: None,
        }
    }

    /// Whether `watch` has been woken (without waiting for it).
    async fn woken(watch: &mut Registration) -> bool {
        tokio::time::timeout(Duration::ZERO, watch.announced())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_watch_is_woken_by_its_own_id_only() {
        let announcements = Announcements::default();
        let listener = listener(&announcements);
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut watch = announcements.watch(mine);

        // Announced while the reader was looking: the next wait returns at once.
        listener.wake(&[other, mine]);
        assert!(woken(&mut watch).await);
        assert!(!woken(&mut watch).await, "one announcement wakes once");

        listener.wake(&[other]);
        assert!(!woken(&mut watch).await, "another id does not wake it");

        drop(watch);
        assert!(lock(&announcements.waiting).by_order.is_empty());
    }

    #[tokio::test]
    async fn missed_announcements_wake_every_watch() {
        let announcements = Announcements::default();
        let listener = listener(&announcements);
        let mut watches: Vec<_> = (0..3)
            .map(|_| announcements.watch(Uuid::now_v7()))
            .collect();
        listener.wake_all();
        for watch in &mut watches {
            assert!(woken(watch).await);
        }
    }
}
