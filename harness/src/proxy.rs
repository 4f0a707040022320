//! A TCP proxy between a service and its NATS server that can delay or hold
//! what the broker sends back — PubAcks included — while the service's own
//! messages still reach the broker. This is the unlucky network under which
//! a publish is stored but its answer comes late, or not at all.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What happens to bytes from the broker to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// Passed on at once.
    Pass,
    /// Passed on this long after they arrived, in order.
    Delay(Duration),
    /// Kept until the policy changes, then passed on.
    Hold,
}

/// A proxy listening on a free loopback port; dropping it stops accepting.
pub struct BrokerProxy {
    address: SocketAddr,
    policy: watch::Sender<Replies>,
    accept: tokio::task::JoinHandle<()>,
}

impl BrokerProxy {
    /// Proxies to the NATS server at `nats_url` (`nats://host:port`).
    pub async fn start(nats_url: &str) -> Self {
        let upstream: SocketAddr = nats_url
            .trim_start_matches("nats://")
            .parse()
            .expect("a nats://host:port URL");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (policy, _) = watch::channel(Replies::Pass);
        let replies = policy.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let replies = replies.subscribe();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, replies).await;
                    }
                });
            }
        });
        Self {
            address,
            policy,
            accept,
        }
    }

    /// The URL a service connects to instead of the broker's.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Sets what happens to the broker's replies from now on.
    pub fn set(&self, replies: Replies) {
        self.policy.send_replace(replies);
    }
}

impl Drop for BrokerProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, mut replies: watch::Receiver<Replies>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let (chunks, mut pending) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n) = server_read.read(&mut buffer).await {
            if n == 0 || chunks.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    while let Some((arrived, chunk)) = pending.recv().await {
        loop {
            let policy = *replies.borrow_and_update();
            match policy {
                Replies::Pass => break,
                Replies::Delay(delay) => {
                    tokio::time::sleep_until(arrived + delay).await;
                    break;
                }
                Replies::Hold => {
                    if replies.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if client_write.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// Settings that run a service with its wall clock `offset` from the real
/// one (libfaketime; monotonic time is left alone), or `None` with the
/// reason when libfaketime is not installed (Debian: `faketime`).
pub fn shifted_clock(offset: &str) -> Result<Vec<(&'static str, String)>, String> {
    let library = std::fs::read_dir("/usr/lib")
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([std::path::PathBuf::from(
            "/usr/lib/faketime/libfaketime.so.1",
        )])
        .find(|path| path.is_file())
        .ok_or("libfaketime is not installed (Debian package faketime)")?;
    Ok(vec![
        ("LD_PRELOAD", library.display().to_string()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
    ])
}
