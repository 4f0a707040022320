//! The tools that run the whole system on the [`harness`], and what only the
//! end-to-end tests need beyond it.
//!
//! # Layout
//! - [`bench`]: the benchmark behind `src/bin/bench.rs`.
//! - [`chaos`]: the chaos run behind `src/bin/chaos.rs`.
//! - [`console`]: `order-events console`, the patterns live in a browser.
//! - [`crash_demo`]: the crash behind `scripts/demo.sh --crash`, once per mode.
//! - [`otlp`]: an OTLP receiver that decodes the spans the services export.

pub mod bench;
pub mod chaos;
pub mod console;
pub mod crash_demo;
pub mod otlp;
