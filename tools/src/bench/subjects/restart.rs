//! How long nats-server takes to serve a loaded stream again, and what it
//! holds afterwards: stopped politely (it writes its stream state on the
//! way out) or killed (it rebuilds the state, per-subject index included,
//! from the message blocks), then started on the same store. The time runs
//! from the stop to the first `STREAM.INFO` that reports every message.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::servers::Nats;
use serde::Serialize;

use super::probe::{self, Memory};

/// How the server is taken down before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGTERM, waiting for it to exit.
    Polite,
    /// SIGKILL, as a crash would.
    Kill,
}

/// One restart of a loaded server.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Restart {
    /// From the stop to the stream answering with all its messages.
    pub secs: f64,
    /// Its memory once it answered.
    pub memory: Memory,
}

/// The longest a restart may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(600);

/// Stops `nats` the way `stop` says, starts it again on its store, and
/// waits until stream `stream` reports `messages` messages.
pub(super) async fn restart(
    nats: &mut Nats,
    stream: &str,
    messages: u64,
    stop: Stop,
) -> anyhow::Result<Restart> {
    let started = Instant::now();
    tokio::task::block_in_place(|| match stop {
        Stop::Polite => nats.restart(),
        Stop::Kill => {
            nats.kill();
            nats.start_again()
        }
    })
    .context("starting nats-server again")?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    loop {
        match probe::stream_state(&js, stream).await {
            Ok(state) if state.messages == messages => break,
            Ok(state) if started.elapsed() > PATIENCE => {
                anyhow::bail!(
                    "stream {stream} holds {} messages {PATIENCE:?} after a restart, not {messages}",
                    state.messages
                )
            }
            Err(error) if started.elapsed() > PATIENCE => {
                return Err(error.context(format!("stream {stream} after a restart")));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let pid = nats.pid().context("nats-server is not running")?;
    Ok(Restart {
        secs,
        memory: probe::memory(pid)?,
    })
}
