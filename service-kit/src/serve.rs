//! The HTTP listeners of a service: the public one on `LISTEN_ADDR`, and an
//! admin one on `ADMIN_LISTEN_ADDR` when set, which alone then serves the
//! operator endpoints (metrics, full listings). Both stop together.
//!
//! The public listener logs `listening on http://ADDR` (tools and the test
//! harness read the address from that line) after the admin one logged
//! `admin endpoints on http://ADDR`, so that once the public line is out,
//! both accept connections.

use std::future::Future;
use std::net::SocketAddr;

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
