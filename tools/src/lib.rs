//! The tools that run the whole system on private servers, through the
//! [`harness`]: what a user runs to measure, break or watch the patterns.
//!
//! # Layout
//! - [`bench`]: the benchmark behind `src/bin/bench.rs`.
//! - [`chaos`]: the chaos run behind `src/bin/chaos.rs`.
//! - [`console`]: `order-events console`, the patterns live in a browser.
//! - [`crash_demo`]: the crash behind `src/bin/crash-demo.rs` (and
//!   `scripts/demo.sh --crash`), once per mode.
//! - [`modes`]: `--modes`, parsed as the modes' `ValueEnum`.

pub mod bench;
pub mod chaos;
pub mod console;
pub mod crash_demo;
pub mod modes;
