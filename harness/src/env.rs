//! One isolated world per test on the shared servers: its own databases and
//! stream prefix, the servers it may stop, and [`ServiceStart`], the one way
//! to start its services.

mod start;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::jetstream;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use tempfile::TempDir;

pub use self::start::ServiceStart;
use crate::cluster::NatsCluster;
use crate::mode::Mode;
use crate::servers::{Nats, Postgres, shared};
use crate::service::Log;
use crate::wait::{CONVERGE, eventually};

/// A test's databases, stream prefix and service processes.
pub struct TestEnv {
    name: String,
    nats_url: String,
    orders_url: String,
    rewards_url: String,
    log: Log,
    started: AtomicUsize,
    /// Where the services report their addresses.
    dir: TempDir,
    private_nats: Option<Mutex<Nats>>,
    private_postgres: Option<Mutex<Postgres>>,
    /// `STREAM_REPLICAS` of the services (on a cluster).
    stream_replicas: Option<usize>,
    pub http: reqwest::Client,
}

/// Which servers a test gets to itself, so that it may stop or restart them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Private {
    pub nats: bool,
    pub postgres: bool,
    /// A private PostgreSQL with fsync and synchronous commit on.
    pub durable: bool,
}

impl Private {
    /// A PostgreSQL of the test's own, which it may stop, crash and restart.
    pub fn postgres() -> Self {
        Self {
            postgres: true,
            ..Self::default()
        }
    }
}

impl TestEnv {
    /// Creates fresh databases `<name>_orders` and `<name>_rewards`; `name`
    /// also prefixes the test's streams. Use the test's name: it must be unique.
    pub async fn new(name: &str) -> Self {
        Self::with_private(name, Private::default()).await
    }

    /// Like [`TestEnv::new`], with a NATS server of its own that the test
    /// may stop and start.
    pub async fn with_private_nats(name: &str) -> Self {
        Self::with_private(
            name,
            Private {
                nats: true,
                ..Private::default()
            },
        )
        .await
    }

    /// Like [`TestEnv::new`], on `cluster`: the services get its servers
    /// as `NATS_URL` and keep each stream on every node (`STREAM_REPLICAS`).
    pub async fn on_cluster(name: &str, cluster: &NatsCluster) -> Self {
        Self::on_cluster_with(name, cluster, Private::default()).await
    }

    /// Like [`TestEnv::on_cluster`], with a PostgreSQL of its own when
    /// `private` asks for one (its `nats` is ignored: the cluster is the
    /// test's own).
    pub async fn on_cluster_with(name: &str, cluster: &NatsCluster, private: Private) -> Self {
        let private = Private {
            nats: false,
            ..private
        };
        let mut env = Self::create(name, private, Some(cluster.url())).await;
        env.stream_replicas = Some(crate::cluster::NODES);
        env
    }

    /// Like [`TestEnv::new`], with the services on the NATS server at
    /// `nats_url` (one the caller runs, or a proxy in front of it).
    pub async fn on_nats(name: &str, nats_url: String) -> Self {
        Self::create(name, Private::default(), Some(nats_url)).await
    }

    /// Like [`TestEnv::new`], with the servers `private` names of its own.
    pub async fn with_private(name: &str, private: Private) -> Self {
        Self::create(name, private, None).await
    }

    async fn create(name: &str, private: Private, nats_url: Option<String>) -> Self {
        let shared = (!private.nats || !private.postgres).then(shared);
        let private_postgres = private
            .postgres
            .then(|| Postgres::start_with(private.durable).expect("starting a private PostgreSQL"));
        let admin_url = match (&private_postgres, shared) {
            (Some(pg), _) => pg.url("postgres"),
            (None, Some(servers)) => servers.postgres_admin_url.clone(),
            (None, None) => unreachable!("a shared server is started when one is not private"),
        };
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let orders_db = format!("{name}_orders");
        let rewards_db = format!("{name}_rewards");
        let mut admin = eventually("PostgreSQL to accept connections", CONVERGE, || async {
            PgConnection::connect(&admin_url).await.ok()
        })
        .await;
        for db in [&orders_db, &rewards_db] {
            recreate(&mut admin, db)
                .await
                .expect("creating a test database");
        }
        let with_db = |db: &str| {
            let base = admin_url.rsplit_once('/').map_or("", |(b, _)| b);
            format!("{base}/{db}")
        };
        let private_nats = private
            .nats
            .then(|| Nats::start().expect("starting a private nats-server"));
        let nats_url = match (nats_url, &private_nats, shared) {
            (Some(url), _, _) => url,
            (None, Some(nats), _) => nats.url(),
            (None, None, Some(servers)) => servers.nats_url.clone(),
            (None, None, None) => {
                unreachable!("a shared server is started when one is not private")
            }
        };
        Self {
            orders_url: with_db(&orders_db),
            rewards_url: with_db(&rewards_db),
            nats_url,
            private_nats: private_nats.map(Mutex::new),
            private_postgres: private_postgres.map(Mutex::new),
            stream_replicas: None,
            name,
            log: Log::default(),
            started: AtomicUsize::new(0),
            dir: tempfile::Builder::new()
                .prefix("e2e-services-")
                .tempdir()
                .expect("creating a temporary directory"),
            http: reqwest::Client::new(),
        }
    }

    fn label(&self, service: &str) -> String {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        format!("{service}#{n}")
    }

    fn private_nats(&self) -> std::sync::MutexGuard<'_, Nats> {
        self.private_nats
            .as_ref()
            .expect("created with TestEnv::with_private_nats")
            .lock()
            .expect("nats lock")
    }

    /// Stops the test's private NATS server (its store is kept).
    pub fn stop_nats(&self) {
        self.private_nats().stop();
    }

    /// Kills the test's private NATS server with SIGKILL (its store is kept).
    pub fn kill_nats(&self) {
        self.private_nats().kill();
    }

    /// Crashes the test's private PostgreSQL (immediate shutdown) and starts
    /// it again with crash recovery.
    pub fn crash_postgres(&self) {
        self.private_postgres
            .as_ref()
            .expect("created with a private PostgreSQL")
            .lock()
            .expect("postgres lock")
            .crash_and_restart()
            .expect("restarting PostgreSQL");
    }

    /// Starts the test's private NATS server again, on the same port and store.
    pub fn start_nats(&self) {
        self.private_nats()
            .start_again()
            .expect("starting NATS again");
    }

    /// Stops the test's private PostgreSQL (fast shutdown: clients are
    /// disconnected); its data is kept.
    pub fn stop_postgres(&self) {
        self.private_postgres().stop();
    }

    /// Starts the test's private PostgreSQL again, on the same port and data.
    pub fn start_postgres(&self) {
        self.private_postgres()
            .start_again()
            .expect("starting PostgreSQL again");
    }

    fn private_postgres(&self) -> std::sync::MutexGuard<'_, Postgres> {
        self.private_postgres
            .as_ref()
            .expect("created with a private PostgreSQL")
            .lock()
            .expect("postgres lock")
    }

    /// The pid of the test's private PostgreSQL's postmaster, while it runs.
    pub fn postgres_pid(&self) -> Option<u32> {
        self.private_postgres
            .as_ref()?
            .lock()
            .expect("postgres lock")
            .pid()
    }

    /// The pid of the test's private nats-server, while it runs.
    pub fn nats_pid(&self) -> Option<u32> {
        self.private_nats.as_ref()?.lock().expect("nats lock").pid()
    }

    /// Restarts the test's private PostgreSQL (fast shutdown: clients are
    /// disconnected), on the same port and data; starts a stopped one.
    pub fn restart_postgres(&self) {
        self.private_postgres
            .as_ref()
            .expect("created with a private PostgreSQL")
            .lock()
            .expect("postgres lock")
            .restart()
            .expect("restarting PostgreSQL");
    }

    /// A start of order-service in `mode`, to configure and then
    /// [`start`](ServiceStart::start).
    pub fn order_service(&self, mode: Mode) -> ServiceStart<'_> {
        ServiceStart::order_service(self, mode)
    }

    /// A start of rewards-service, to configure and then
    /// [`start`](ServiceStart::start).
    pub fn rewards_service(&self) -> ServiceStart<'_> {
        ServiceStart::rewards_service(self)
    }

    /// A URL of a new, empty database `name` on the test's PostgreSQL.
    pub async fn create_database(&self, name: &str) -> String {
        let admin_url = self
            .orders_url
            .rsplit_once('/')
            .map_or("", |(b, _)| b)
            .to_owned();
        let mut admin = PgConnection::connect(&format!("{admin_url}/postgres"))
            .await
            .expect("connecting to PostgreSQL");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("creating a database");
        format!("{admin_url}/{name}")
    }

    /// order-service's database URL (for operator commands).
    pub fn orders_url(&self) -> &str {
        &self.orders_url
    }

    /// A pool on order-service's database.
    pub async fn orders_db(&self) -> PgPool {
        pool(&self.orders_url).await
    }

    /// A pool on rewards-service's database.
    pub async fn rewards_db(&self) -> PgPool {
        pool(&self.rewards_url).await
    }

    /// A JetStream context on the test's NATS server (or cluster).
    pub async fn jetstream(&self) -> jetstream::Context {
        let servers: Vec<async_nats::ServerAddr> = self
            .nats_url
            .split(',')
            .map(|url| url.parse().expect("a server address"))
            .collect();
        let client = async_nats::connect(servers)
            .await
            .expect("connecting to NATS");
        jetstream::new(client)
    }

    /// The test's NATS server.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The test's prefix for stream and subject names.
    /// What the processes of this test printed, each line labelled with
    /// its process.
    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn events_prefix(&self) -> &str {
        &self.name
    }

    /// Messages stored in the test's order stream.
    pub async fn stream_messages(&self) -> u64 {
        let names = shared_events::Names::new(&self.name).expect("valid prefix");
        self.stream_len(names.stream()).await
    }

    /// Messages stored in the test's dead-letter stream.
    pub async fn dead_letters(&self) -> u64 {
        let names = shared_events::Names::new(&self.name).expect("valid prefix");
        self.stream_len(names.dead_letter_stream()).await
    }

    /// Waits until the durable consumer `durable` has processed and acked
    /// everything in the stream, redeliveries included.
    pub async fn wait_until_consumed_by(&self, durable: &str) {
        let names = shared_events::Names::new(&self.name).expect("valid prefix");
        let js = self.jetstream().await;
        eventually(
            &format!("consumer {durable} to catch up"),
            CONVERGE,
            || async {
                let mut consumer: jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(durable, names.stream())
                    .await
                    .ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            },
        )
        .await;
    }

    async fn stream_len(&self, stream: &str) -> u64 {
        let mut stream = self
            .jetstream()
            .await
            .get_stream(stream)
            .await
            .expect("looking up a stream");
        stream.info().await.expect("stream info").state.messages
    }
}

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connecting to a test database")
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("TEST_LOG").is_none() {
            eprintln!("--- last log lines of {} ---", self.name);
            for line in self.log.tail(150) {
                eprintln!("{line}");
            }
        }
    }
}

/// Drops the database `db` if it exists and creates it empty. (A function
/// of its own, so that the futures that call it are `Send`.)
async fn recreate(admin: &mut PgConnection, db: &str) -> sqlx::Result<()> {
    let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
    sqlx::raw_sql(&drop).execute(&mut *admin).await?;
    let create = format!("CREATE DATABASE {db}");
    sqlx::raw_sql(&create).execute(&mut *admin).await?;
    Ok(())
}
