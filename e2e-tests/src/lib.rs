//! A harness that runs the whole system the way a user would: private
//! PostgreSQL and NATS servers, the real service binaries as processes, and
//! HTTP from the outside.
//!
//! # Layout
//! - [`servers`]: a private PostgreSQL (`initdb` in a temp dir, `wal_level=logical`)
//!   and a private `nats-server -js`, each on a free port, stopped when the
//!   test process exits, however it exits.
//! - [`service`]: order-service and rewards-service as child processes, which
//!   report their address through a file (`LISTEN_ADDR_FILE`).
//! - [`env`]: [`TestEnv`], one isolated world per test: its own databases and
//!   its own stream prefix on the shared servers, and the builder that starts
//!   its services: `env.order_service(Mode::Outbox).crash_at(..).start()`.
//! - [`cluster`]: a three-node NATS cluster whose nodes a test kills,
//!   pauses, restarts and (in network namespaces, as root) cuts off.
//! - [`fleet`]: one mode deployed on a cluster, two instances of each
//!   service, with clients that spread orders over them.
//! - [`mode`]: the typed choices of a start, [`Mode`] and [`CrashPoint`].
//! - [`bench`]: the benchmark behind `src/bin/bench.rs`.
//! - [`chaos`]: the chaos run behind `src/bin/chaos.rs`.
//! - [`console`]: `order-events console`, the patterns live in a browser.
//! - [`crash_demo`]: the crash behind `scripts/demo.sh --crash`, once per mode.
//! - [`clients`]: clients that retry each order with its key until it is
//!   acknowledged, spread over the order-service instances.
//! - [`proxy`]: a TCP proxy that delays or holds the broker's replies, and a
//!   wall clock shifted with libfaketime.
//! - [`otlp`]: an OTLP receiver that decodes the spans the services export.
//! - [`wait`]: [`eventually`], a bounded wait on a condition.
//!
//! Set `TEST_LOG=1` to see the services' logs; they are printed anyway when a
//! test fails. `E2E_DATABASE_URL` (a server URL whose user may create
//! databases) and `E2E_NATS_URL` make the harness use running servers instead.

pub mod api;
pub mod bench;
pub mod chaos;
pub mod clients;
pub mod cluster;
pub mod console;
pub mod crash_demo;
pub mod env;
pub mod fleet;
pub mod mode;
pub mod otlp;
pub mod proxy;
pub mod servers;
pub mod service;
pub mod wait;

pub use env::TestEnv;
pub use mode::{CrashPoint, Mode};
pub use wait::eventually;
