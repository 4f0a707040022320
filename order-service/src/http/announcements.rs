//! Wakes `GET /orders/{id}?wait=` readers without polling: ONE `LISTEN` per
//! process on the projector's channel fans the announced ids out through an
//! in-process broadcast.
//!
//! Guarantee: a waiter sees its order no later than one look after the
//! COMMIT that stored it. It subscribes before its first look, so an order
//! committed after that look is announced to it; it looks again only when its
//! own id is announced, when announcements may have been missed (the channel
//! lagged, or the listener reconnected), and once more at its deadline — so
//! a lost notification delays an answer to the deadline, never loses it.
//! Orders stored by the request itself (every mode but self-read) are not
//! announced: a waiter for one finds it on its first look or at its deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::projected;

/// Announcements held for slow waiters; one that falls further behind
/// lags, and looks at the database once.
const CAPACITY: usize = 1024;
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
enum Announcement {
    /// These orders were committed.
    Projected(Arc<[Uuid]>),
    /// Notifications may have been lost: every waiter looks again.
    Missed,
}

/// The fan-out side, cloned into every request.
#[derive(Clone)]
pub struct Announcements {
    sender: broadcast::Sender<Announcement>,
}

impl Default for Announcements {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Announcements {
    /// A waiter for `id` until `deadline`, subscribed from now on.
    pub fn waiter(&self, id: Uuid, deadline: Instant) -> Waiter {
        Waiter {
            id,
            deadline,
            receiver: self.sender.subscribe(),
        }
    }

    /// Connects the process's one listener (at start-up, where the database
    /// is known to answer); [`Listener::run`] then forwards until stopped.
    pub async fn listen(&self, database_url: &str) -> anyhow::Result<Listener> {
        Ok(Listener {
            database_url: database_url.to_owned(),
            sender: self.sender.clone(),
            listener: Some(connect(database_url).await?),
        })
    }
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
    sender: broadcast::Sender<Announcement>,
    listener: Option<PgListener>,
}

impl Listener {
    /// Forwards notifications to the waiters until `stop`; reconnects when
    /// the connection is lost, and then tells every waiter to look again.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let Some(listener) = &mut self.listener else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
                match connect(&self.database_url).await {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.announce(Announcement::Missed);
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
                Ok(Some(notification)) => {
                    let ids = projected::parse(notification.payload());
                    self.announce(Announcement::Projected(ids.into()));
                }
                // The connection was lost and made again: what was
                // notified in between is gone.
                Ok(None) => self.announce(Announcement::Missed),
                Err(error) => {
                    tracing::warn!(%error, "the listener of projected orders failed");
                    self.listener = None;
                    self.announce(Announcement::Missed);
                }
            }
        }
    }

    fn announce(&self, announcement: Announcement) {
        // An error only means that nobody is waiting.
        let _ = self.sender.send(announcement);
    }
}

/// One `?wait` reader's view of the announcements.
pub struct Waiter {
    id: Uuid,
    deadline: Instant,
    receiver: broadcast::Receiver<Announcement>,
}

impl Waiter {
    /// Waits until another look at the database is worth it: the id was
    /// announced, announcements were missed, or the deadline came. False
    /// once the deadline has passed: no more looks.
    pub async fn worth_looking_again(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return true,
                received = self.receiver.recv() => match received {
                    Ok(Announcement::Projected(ids)) if ids.contains(&self.id) => return true,
                    Ok(Announcement::Projected(_)) => {}
                    Ok(Announcement::Missed) | Err(RecvError::Lagged(_)) => return true,
                    Err(RecvError::Closed) => {
                        deadline.as_mut().await;
                        return true;
                    }
                },
            }
        }
    }
}
