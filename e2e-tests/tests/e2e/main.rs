//! End-to-end tests: real PostgreSQL, real NATS JetStream, the real service
//! binaries. One binary, so the servers start once and tests run in parallel,
//! each in its own databases and stream prefix.

mod api_contract;
mod audit;
mod audit_checks;
mod bad_input;
mod bench_smoke;
mod cancellations;
mod cdc;
mod chaos_smoke;
mod cluster;
mod compose_files;
mod console;
mod crash_demo;
mod dual_write;
mod http_limits;
mod keys;
mod logs;
mod metrics;
mod order_history;
mod outbox;
mod poison;
mod publish_batches;
mod self_read;
mod self_read_adversity;
mod slot_identity;
mod stream_settings;
mod switching;
mod traces;
mod transient;
mod wait_notifier;
