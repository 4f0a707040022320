//! `dual-write`: the control. COMMIT the order, then publish `OrderPlaced`.
//!
//! Guarantee: none. If the process dies (or NATS is unreachable) between the
//! COMMIT and the PubAck, the order is stored and the event is gone for good;
//! nothing will ever publish it. The e2e suite asserts this loss.

use shared_events::{Envelope, jetstream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::store::{self, Stored};
use super::{Deps, Mode, Outcome, PlaceError, Placed, Placement, Worker};

/// The write path; there is no worker — which is the point.
pub fn start(deps: Deps, _shutdown: CancellationToken) -> (DualWrite, Option<Worker>) {
    // Exported at 0 from the start, so that the first loss is an increase.
    service_kit::meters::lost_none_yet("dual-write");
    (DualWrite { deps }, None)
}

pub struct DualWrite {
    deps: Deps,
}

impl DualWrite {
    pub async fn place(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order =
            match store::commit(&self.deps.pool, Mode::DualWrite.name(), placement, None).await? {
                Stored::New(order) => order,
                Stored::Replayed(order) => return Ok(Placed::stored(order, Outcome::Replayed)),
            };

        let mut event = Envelope::new(Uuid::now_v7(), order.created_at, order.placed_event());
        event.traceparent = service_kit::trace::current_traceparent();
        let subject = self.deps.names.order_placed_subject();
        let span = service_kit::trace::publish_span(&subject, event.event_id);
        let traceparent = service_kit::trace::traceparent_of(&span);
        match jetstream::publish(
            &self.deps.jetstream,
            subject,
            event.event_id,
            traceparent.as_deref(),
            event.to_bytes(),
        )
        .instrument(span)
        .await
        {
            Ok(published) => {
                let duplicate = u64::from(published.duplicate);
                service_kit::meters::published("dual-write", 1 - duplicate, duplicate);
            }
            Err(error) => {
                // This is the flaw the control exists to show: the order is
                // committed and its event is lost.
                service_kit::meters::lost("dual-write");
                tracing::error!(order_id = %order.id, error = %error, "event lost after commit");
            }
        }
        Ok(Placed::stored(order, Outcome::New))
    }
}
