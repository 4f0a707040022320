//! The closed sets a test picks from, each spelled the services' way in one
//! place: the modes of order-service ([`Mode`]) and the named crash and
//! fault points of both services ([`CrashPoint`]), so a typo is a compile
//! error rather than a test that silently runs without its fault.

/// A pattern as order-service runs it: `ORDER_MODE`, plus the outbox relay's
/// flavour for [`Mode::OutboxCdc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// The outbox, published by the polling relay.
    Outbox,
    /// The outbox, published by the relay that tails it by logical
    /// replication (`OUTBOX_RELAY=cdc`).
    OutboxCdc,
    /// The order's own insert is the event, read from the WAL by logical
    /// replication.
    Cdc,
    /// The event is the write: published first, projected into the order
    /// history by order-service itself.
    SelfRead,
    /// The control that loses data.
    DualWrite,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Outbox,
        Mode::OutboxCdc,
        Mode::Cdc,
        Mode::SelfRead,
        Mode::DualWrite,
    ];

    /// The name reports and command lines use (`outbox-cdc` for the CDC relay).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Outbox => "outbox",
            Mode::OutboxCdc => "outbox-cdc",
            Mode::Cdc => "cdc",
            Mode::SelfRead => "self-read",
            Mode::DualWrite => "dual-write",
        }
    }

    /// The environment order-service runs this mode with.
    pub fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Mode::Outbox => &[("ORDER_MODE", "outbox")],
            Mode::OutboxCdc => &[("ORDER_MODE", "outbox"), ("OUTBOX_RELAY", "cdc")],
            Mode::Cdc => &[("ORDER_MODE", "cdc")],
            Mode::SelfRead => &[("ORDER_MODE", "self-read")],
            Mode::DualWrite => &[("ORDER_MODE", "dual-write")],
        }
    }
}

/// The service binaries a test starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    OrderService,
    RewardsService,
}

impl ServiceKind {
    /// The binary's (and crate's) name.
    pub fn binary(self) -> &'static str {
        match self {
            ServiceKind::OrderService => "order-service",
            ServiceKind::RewardsService => "rewards-service",
        }
    }
}

/// A named point where a service built with the `failpoints` feature aborts
/// (as `kill -9` would) or, for the `…ApplyFails` points, fails every
/// attempt the way its database would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// order-service in outbox, CDC or dual-write mode: the order is
    /// committed, its event not yet published (by the request, in dual-write).
    AfterCommitBeforePublish,
    /// The outbox relay: the batch is acknowledged by JetStream, its rows
    /// are not yet deleted.
    AfterPublishBeforeMark,
    /// The CDC reader (cdc mode and the CDC outbox relay): published and
    /// acknowledged, the slot position not yet confirmed.
    CdcBeforeConfirm,
    /// Self-read: the event is acknowledged by JetStream, the client not
    /// yet answered.
    SelfReadAfterPublish,
    /// Self-read's projector: the order is committed, the message not acked.
    ProjectorAfterCommitBeforeAck,
    /// Self-read's projector fails to apply every delivery.
    ProjectorApplyFails,
    /// rewards-service: the credit is committed, the message not acked.
    ConsumerAfterCommitBeforeAck,
    /// rewards-service fails to apply every delivery.
    ConsumerApplyFails,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::AfterCommitBeforePublish,
        CrashPoint::AfterPublishBeforeMark,
        CrashPoint::CdcBeforeConfirm,
        CrashPoint::SelfReadAfterPublish,
        CrashPoint::ProjectorAfterCommitBeforeAck,
        CrashPoint::ProjectorApplyFails,
        CrashPoint::ConsumerAfterCommitBeforeAck,
        CrashPoint::ConsumerApplyFails,
    ];

    /// The name in `FAILPOINTS`, as the services' code spells it.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterCommitBeforePublish => "after_commit_before_publish",
            CrashPoint::AfterPublishBeforeMark => "after_publish_before_mark",
            CrashPoint::CdcBeforeConfirm => "cdc_before_confirm",
            CrashPoint::SelfReadAfterPublish => "self_read_after_publish",
            CrashPoint::ProjectorAfterCommitBeforeAck => "projector_after_commit_before_ack",
            CrashPoint::ProjectorApplyFails => "projector_apply_fails",
            CrashPoint::ConsumerAfterCommitBeforeAck => "consumer_after_commit_before_ack",
            CrashPoint::ConsumerApplyFails => "consumer_apply_fails",
        }
    }

    /// The service whose code holds the point: switching it on in the other
    /// one would do nothing.
    pub fn service(self) -> ServiceKind {
        match self {
            CrashPoint::ConsumerAfterCommitBeforeAck | CrashPoint::ConsumerApplyFails => {
                ServiceKind::RewardsService
            }
            _ => ServiceKind::OrderService,
        }
    }

    /// The `FAILPOINTS` value that switches `points` on.
    pub fn failpoints(points: &[CrashPoint]) -> String {
        points
            .iter()
            .map(|point| format!("{}=return", point.name()))
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are those the services' code passes to `crash_point` and
    /// `failing` (or as a consumer's `crash_point` / `fault_point`): a
    /// renamed point in a service fails here, not as a test that silently
    /// runs without its fault.
    #[test]
    fn every_crash_point_is_named_in_the_services_code() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut sources = String::new();
        for dir in [
            "order-service/src",
            "rewards-service/src",
            "service-kit/src",
        ] {
            read_rust_files(&std::path::Path::new(root).join(dir), &mut sources);
        }
        for point in CrashPoint::ALL {
            assert!(
                sources.contains(&format!("\"{}\"", point.name())),
                "{point:?} ({}) appears in no service's code",
                point.name()
            );
        }
    }

    #[test]
    fn several_points_are_switched_on_together() {
        assert_eq!(
            CrashPoint::failpoints(&[
                CrashPoint::AfterCommitBeforePublish,
                CrashPoint::ProjectorApplyFails
            ]),
            "after_commit_before_publish=return;projector_apply_fails=return"
        );
    }

    fn read_rust_files(dir: &std::path::Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).expect("reading a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                read_rust_files(&path, into);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                into.push_str(&std::fs::read_to_string(&path).expect("reading a source file"));
            }
        }
    }
}
