//! Starting a service of a [`TestEnv`]: one builder for both binaries,
//!
//! ```ignore
//! env.order_service(Mode::Outbox)
//!     .crash_at(CrashPoint::AfterCommitBeforePublish)
//!     .set("PUBLISH_TIMEOUT", "1s")
//!     .start()
//!     .await
//! ```
//!
//! It runs each service on the test's databases and stream prefix with
//! short timeouts, so that faults resolve in seconds; a test's own settings
//! come last and win.

use crate::mode::{CrashPoint, Mode, ServiceKind};
use crate::service::{Launch, Service};

use super::TestEnv;

/// A service start being configured; nothing runs until
/// [`start`](Self::start) or [`try_start`](Self::try_start).
#[derive(Clone)]
#[must_use = "nothing starts until .start() or .try_start()"]
pub struct ServiceStart<'env> {
    env: &'env TestEnv,
    kind: ServiceKind,
    mode: Option<Mode>,
    crash_points: Vec<CrashPoint>,
    admin: bool,
    settings: Vec<(String, String)>,
}

impl<'env> ServiceStart<'env> {
    pub(super) fn order_service(env: &'env TestEnv, mode: Mode) -> Self {
        Self::new(env, ServiceKind::OrderService, Some(mode))
    }

    pub(super) fn rewards_service(env: &'env TestEnv) -> Self {
        Self::new(env, ServiceKind::RewardsService, None)
    }

    fn new(env: &'env TestEnv, kind: ServiceKind, mode: Option<Mode>) -> Self {
        Self {
            env,
            kind,
            mode,
            crash_points: Vec::new(),
            admin: false,
            settings: Vec::new(),
        }
    }

    /// Switches `point` on: the service aborts there (or, for a fault
    /// point, fails there) every time it gets there.
    ///
    /// # Panics
    /// When `point` belongs to the other service, where it would do nothing.
    pub fn crash_at(mut self, point: CrashPoint) -> Self {
        assert_eq!(
            point.service(),
            self.kind,
            "{point:?} is a point of {}, not of {}",
            point.service().binary(),
            self.kind.binary()
        );
        self.crash_points.push(point);
        self
    }

    /// Sets the environment variable `name`, over the harness's default.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.settings.push((name.to_owned(), value.into()));
        self
    }

    /// Sets each of `settings`, as [`set`](Self::set) does.
    pub fn set_all<K, V>(self, settings: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        settings
            .into_iter()
            .fold(self, |start, (name, value)| start.set(name.as_ref(), value))
    }

    /// Runs an admin listener on a free port too: see [`Service::admin_url`].
    pub fn with_admin_listener(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Starts the service and waits until it listens.
    ///
    /// # Panics
    /// When it does not start; the message holds its last log lines.
    pub async fn start(self) -> Service {
        let binary = self.kind.binary();
        match self.try_start().await {
            Ok(service) => service,
            Err(error) => panic!("starting {binary}: {error:#}"),
        }
    }

    /// Starts the service, for a start that may be refused: the error then
    /// carries the service's last log lines.
    pub async fn try_start(self) -> anyhow::Result<Service> {
        let env = self.env;
        let binary = self.kind.binary();
        let label = env.label(binary);
        Service::start(Launch {
            binary,
            label,
            env: &self.environment(),
            log: &env.log,
            dir: env.dir.path(),
            admin: self.admin,
        })
        .await
    }

    /// The process's environment: the test's world, the harness's short
    /// timeouts, the mode, the crash points, and last the test's settings.
    fn environment(&self) -> Vec<(String, String)> {
        let env = self.env;
        let database_url = match self.kind {
            ServiceKind::OrderService => &env.orders_url,
            ServiceKind::RewardsService => &env.rewards_url,
        };
        let mut vars: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", database_url),
            ("NATS_URL", &env.nats_url),
            ("EVENTS_PREFIX", &env.name),
            ("DB_MAX_CONNECTIONS", "8"),
            // Redeliver what a killed consumer had not acked quickly.
            ("CONSUMER_ACK_WAIT", "2s"),
        ];
        if self.kind == ServiceKind::OrderService {
            vars.extend([
                ("CDC_HEARTBEAT_INTERVAL", "200ms"),
                ("RELAY_POLL_INTERVAL", "500ms"),
            ]);
        }
        let replicas = env.stream_replicas.map(|n| n.to_string());
        if let Some(replicas) = &replicas {
            vars.push(("STREAM_REPLICAS", replicas));
        }
        if let Some(mode) = self.mode {
            vars.extend(mode.settings());
        }
        let failpoints = CrashPoint::failpoints(&self.crash_points);
        if !failpoints.is_empty() {
            vars.push(("FAILPOINTS", &failpoints));
        }
        vars.into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .chain(self.settings.iter().cloned())
            .collect()
    }
}
