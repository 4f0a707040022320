//! The console seen from any thread: [`Handle`] sends commands in and
//! receives the view out, while the console runs on a thread of its own.

use std::sync::Arc;
use std::time::Duration;

use super::Command;
use super::view::View;
use super::world::Console;

/// How often the sampler and the supervisor look.
const TICK: Duration = Duration::from_millis(500);

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The console, from any thread: commands in, the view out.
///
/// The console itself runs on a thread of its own, on a single-threaded
/// runtime: starting services and reading their databases there needs no
/// `Send` futures (the harness's are not all provably so), and the load of
/// a few lanes is light.
#[derive(Clone)]
pub struct Handle {
    commands: tokio::sync::mpsc::UnboundedSender<(Command, Reply)>,
    stop: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    view: tokio::sync::watch::Receiver<Option<View>>,
}

impl Handle {
    /// Starts the console's thread, its nats-server and proxy; no lane runs yet.
    pub async fn start() -> anyhow::Result<Self> {
        let (commands, mut inbox) = tokio::sync::mpsc::unbounded_channel::<(Command, Reply)>();
        let (stop, mut stops) =
            tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<()>>();
        let (publish, view) = tokio::sync::watch::channel(None);
        let (ready, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(anyhow::Error::from(error)));
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let console = match Console::start().await {
                        Ok(console) => {
                            let _ = ready.send(Ok(()));
                            console
                        }
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let mut ticks = tokio::time::interval(TICK);
                    loop {
                        tokio::select! {
                            stopped = stops.recv() => {
                                console.stop().await;
                                if let Some(done) = stopped {
                                    let _ = done.send(());
                                }
                                return;
                            }
                            command = inbox.recv() => {
                                let Some((command, reply)) = command else { return };
                                let console = Arc::clone(&console);
                                tokio::task::spawn_local(async move {
                                    let _ = reply.send(console.obey(command).await);
                                });
                            }
                            _ = ticks.tick() => {
                                console.tick().await;
                                publish.send_replace(Some(console.view().await));
                            }
                        }
                    }
                });
            })?;
        started.await??;
        Ok(Self {
            commands,
            stop,
            view,
        })
    }

    /// Kills every service the console started and ends the console; waits
    /// (a few seconds at most) until that is done. Blocks the thread: call
    /// it last.
    pub fn stop(&self) {
        let (done, stopped) = std::sync::mpsc::channel();
        if self.stop.send(done).is_ok() {
            let _ = stopped.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Does `command`; the error says why it could not.
    pub async fn send(&self, command: Command) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send((command, reply))
            .map_err(|_| "the console stopped".to_owned())?;
        answer.await.map_err(|_| "the console stopped".to_owned())?
    }

    /// The latest view, once there is one; waits for the next.
    pub async fn next_view(&mut self) -> Option<View> {
        self.view.changed().await.ok()?;
        self.view.borrow_and_update().clone()
    }
}
