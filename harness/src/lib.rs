//! The whole system run the way a user runs it: private PostgreSQL and NATS
//! servers, the real service binaries as processes, and HTTP from the
//! outside. The end-to-end tests run on it, and so do the tools (`bench`,
//! `chaos`, `crash-demo` and `order-events console`), which start private
//! servers of their own. It is thus a library of the running system rather
//! than test code, and the operator CLI links it for the console; what only
//! the tests need beyond it (the OTLP receiver) stays in `e2e-tests`.
//!
//! # Layout
//! - [`servers`]: a private PostgreSQL (`initdb` in a temp dir, `wal_level=logical`)
//!   and a private `nats-server -js`, each on a free port, stopped when the
//!   process exits, however it exits.
//! - [`service`]: order-service and rewards-service as child processes, which
//!   report their address through a file (`LISTEN_ADDR_FILE`).
//! - [`env`]: [`TestEnv`], one isolated world per test or run: its own
//!   databases and its own stream prefix on the shared servers, and the
//!   builder that starts its services:
//!   `env.order_service(Mode::Outbox).crash_at(..).start()`.
//! - [`cluster`]: a three-node NATS cluster whose nodes a run kills,
//!   pauses, restarts and (in network namespaces, as root) cuts off.
//! - [`fleet`]: one mode deployed on a cluster, two instances of each
//!   service, with clients that spread orders over them.
//! - [`mode`]: the typed choices of a start, [`Mode`] and [`CrashPoint`].
//! - [`api`]: what a client of the services does (place an order, read a
//!   metric, run `order-events audit`), and what the tests count.
//! - [`clients`]: clients that retry each order with its key until it is
//!   acknowledged, spread over the order-service instances.
//! - [`converge`]: waiting until every acknowledged order is credited, then
//!   counting what became of them, by the rules of [`verdict`].
//! - [`proxy`]: a TCP proxy that delays or holds the broker's replies, and a
//!   wall clock shifted with libfaketime.
//! - [`wait`]: [`eventually`], a bounded wait on a condition, and
//!   [`CONVERGE`], how long the system is given.
//!
//! Set `TEST_LOG=1` to see the services' logs; they are printed anyway when a
//! test fails. `E2E_DATABASE_URL` (a server URL whose user may create
//! databases) and `E2E_NATS_URL` make the harness use running servers instead.

pub mod api;
pub mod clients;
pub mod cluster;
pub mod converge;
pub mod env;
pub mod fleet;
pub mod mode;
pub mod proxy;
pub mod servers;
pub mod service;
pub mod verdict;
pub mod wait;

pub use env::TestEnv;
pub use mode::{CrashPoint, Mode};
pub use wait::{CONVERGE, eventually};
