//! What only the end-to-end tests need beyond the [`harness`] they run the
//! system on (the tests themselves are in `tests/e2e/`, one binary).
//!
//! - [`otlp`]: an OTLP receiver that decodes the spans the services export.

pub mod otlp;
