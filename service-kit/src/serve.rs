//! The HTTP listeners of a service: the public one on `LISTEN_ADDR`, and an
//! admin one on `ADMIN_LISTEN_ADDR` when set, which alone then serves the
//! operator endpoints (metrics, full listings). Both stop together.
//!
//! The public listener logs `listening on http://ADDR` after the admin one
//! logged `admin endpoints on http://ADDR`, so that once the public line is
//! out, both accept connections. For programs (the test harness) each
//! address also goes to a file when `LISTEN_ADDR_FILE` /
//! `ADMIN_LISTEN_ADDR_FILE` name one, in the same order: a reader that sees
//! the public file may use both listeners. The file is written under a
//! temporary name and renamed, so it never holds half a line.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What each listener serves.
pub struct Routers {
    pub public: Router,
    /// Present exactly when the listeners have an admin one.
    pub admin: Option<Router>,
}

/// Bound sockets, not yet serving.
pub struct Listeners {
    public: TcpListener,
    admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(public: SocketAddr, admin: Option<SocketAddr>) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))
        };
        let public = bind(public).await?;
        let admin = match admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self { public, admin })
    }

    /// The public address actually bound (useful with port 0).
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// The admin address actually bound, if there is an admin listener.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.admin.as_ref().map(TcpListener::local_addr)
    }

    /// Whether operator endpoints go to a listener of their own.
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// Serves until `shutdown` completes or `stop` is cancelled (by a
    /// worker that cannot go on, say); then cancels `stop`, lets in-flight
    /// requests finish, and waits for the service's `tasks`, which were
    /// given `stop`'s child tokens.
    pub async fn run_until_stopped(
        self,
        routers: Routers,
        stop: CancellationToken,
        tasks: TaskTracker,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let on_signal = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown => on_signal.cancel(),
                () = on_signal.cancelled() => {}
            }
        });
        let served = self.serve(routers, stop.clone()).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        served
    }

    /// Serves until `stop` is cancelled, then lets in-flight requests finish.
    pub async fn serve(self, routers: Routers, stop: CancellationToken) -> anyhow::Result<()> {
        let admin = match (self.admin, routers.admin) {
            (Some(listener), Some(router)) => {
                let addr = listener.local_addr()?;
                tracing::info!(%addr, "admin endpoints on http://{addr}");
                report_address("ADMIN_LISTEN_ADDR_FILE", addr)?;
                Some(
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop.clone().cancelled_owned()),
                )
            }
            (None, None) => None,
            _ => anyhow::bail!("an admin router needs an admin listener, and the other way round"),
        };
        let addr = self.public.local_addr()?;
        tracing::info!(%addr, "listening on http://{addr}");
        report_address("LISTEN_ADDR_FILE", addr)?;
        let public =
            axum::serve(self.public, routers.public).with_graceful_shutdown(stop.cancelled_owned());
        match admin {
            Some(admin) => {
                let (public, admin) = tokio::join!(public.into_future(), admin.into_future());
                public.context("serving HTTP")?;
                admin.context("serving the admin endpoints")
            }
            None => public.await.context("serving HTTP"),
        }
    }
}

/// Writes `http://ADDR` to the file the environment variable `var` names, if
/// it names one. Read here rather than in the services' arguments because it
/// concerns only the listeners, and both services have them.
fn report_address(var: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let Some(path) = std::env::var_os(var).map(PathBuf::from) else {
        return Ok(());
    };
    write_atomically(&path, &format!("http://{addr}\n"))
        .with_context(|| format!("writing the address to {} ({var})", path.display()))
}

/// A reader sees no file or the whole text: the text goes to a sibling
/// temporary file first, which a rename then puts in place.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_file_holds_the_whole_line_and_no_temporary_file_is_left() {
        let dir = std::env::temp_dir().join(format!("serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("service.addr");
        write_atomically(&path, "http://127.0.0.1:1\n").unwrap();
        // A restart on the same path replaces the old address whole.
        write_atomically(&path, "http://127.0.0.1:65535\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "http://127.0.0.1:65535\n"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["service.addr"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
