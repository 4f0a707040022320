//! The modes, and the build that needs one at least.

#[cfg(not(any(
    feature = "outbox",
    feature = "cdc",
    feature = "self-read",
    feature = "dual-write"
)))]
compile_error!(
    "order-service needs at least one pattern feature: outbox, cdc, self-read or dual-write"
);

/// How order-service turns an order into an event; chosen at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Transactional outbox with a relay.
    Outbox,
    /// Change data capture on the orders table.
    Cdc,
    /// Publish first, then project the own event.
    SelfRead,
    /// Commit, then publish: the control that loses events.
    DualWrite,
}

impl Mode {
    /// The name the setting takes: `outbox`, `cdc`, `self-read`, `dual-write`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Cdc => "cdc",
            Self::SelfRead => "self-read",
            Self::DualWrite => "dual-write",
        }
    }
}
