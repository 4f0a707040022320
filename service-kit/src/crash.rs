//! Named crash points (DESIGN.md, "Failure points").
//!
//! Built with the `failpoints` feature, `FAILPOINTS=after_commit_before_publish=return`
//! makes the process abort at that point, losing everything in memory the
//! way `kill -9` would. Without the feature these calls compile to nothing.

/// Reads `FAILPOINTS`; keep the guard for the life of the process.
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    if std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!(
            "FAILPOINTS is set but this binary was built without the failpoints feature"
        );
    }
    None
}

/// Aborts the process if the crash point `name` is switched on.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        eprintln!("crash point {name} triggered: aborting");
        std::process::abort();
    }
}

/// Aborts the process if the crash point `name` is switched on.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Whether the fault point `name` is switched on: the caller then fails the
/// way its dependency would (used to exhaust a consumer's deliveries).
#[cfg(feature = "failpoints")]
pub fn failing(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

/// Whether the fault point `name` is switched on (never, without the feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failing(_name: &str) -> bool {
    false
}
