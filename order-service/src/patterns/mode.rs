//! The modes, and the error for one this build left out.

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

    /// The name this mode writes its orders under, with its relay: what the
    /// mode row holds (`db::mode`), which every write checks. The outbox
    /// relayed by CDC is a mode of its own there, since a switch between
    /// the two relays strands what the other one would have published.
    pub fn fence_name(self, outbox_relayed_by_polling: bool) -> &'static str {
        match self {
            Self::Outbox if !outbox_relayed_by_polling => "outbox-cdc",
            other => other.name(),
        }
    }
}

/// The start-up error for a mode this build left out.
pub fn not_compiled(mode: Mode) -> anyhow::Error {
    let compiled = [Mode::Outbox, Mode::Cdc, Mode::SelfRead, Mode::DualWrite]
        .into_iter()
        .filter(|m| match m {
            Mode::Outbox => cfg!(feature = "outbox"),
            Mode::Cdc => cfg!(feature = "cdc"),
            Mode::SelfRead => cfg!(feature = "self-read"),
            Mode::DualWrite => cfg!(feature = "dual-write"),
        })
        .map(Mode::name)
        .collect::<Vec<_>>();
    anyhow::anyhow!(
        "mode {} is not in this build of order-service (compiled in: {})",
        mode.name(),
        compiled.join(", ")
    )
}
