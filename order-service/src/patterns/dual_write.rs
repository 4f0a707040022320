//! `dual-write`: the control. COMMIT the order, then publish `OrderPlaced`.
//!
//! Guarantee: none. If the process dies (or NATS is unreachable) between the
//! COMMIT and the PubAck, the order is stored and the event is gone for good;
//! nothing will ever publish it. The e2e suite asserts this loss.

use futures::future::BoxFuture;
use shared_events::{Envelope, jetstream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::store::{self, Stored};
use super::{Deps, Mode, Outcome, Pattern, PatternArgs, PlaceError, Placed, Placement};
use super::{Started, WritePath};
use crate::db::orders::OrderWrite;

pub struct DualWrite;

impl Pattern for DualWrite {
    fn mode(&self) -> Mode {
        Mode::DualWrite
    }

    /// The write path; there is no worker — which is the point.
    fn start<'a>(
        &'a self,
        deps: Deps,
        _: &'a PatternArgs,
        _: CancellationToken,
    ) -> BoxFuture<'a, anyhow::Result<Started>> {
        // Exported at 0 from the start, so that the first loss is an increase.
        service_kit::meters::lost_none_yet("dual-write");
        let write = Box::new(Writes { deps });
        Box::pin(async {
            Ok(Started {
                write,
                worker: None,
            })
        })
    }
}

struct Writes {
    deps: Deps,
}

impl WritePath for Writes {
    fn place(&self, placement: Placement) -> BoxFuture<'_, Result<Placed, PlaceError>> {
        Box::pin(self.commit_then_publish(placement))
    }

    fn places_through_broker(&self) -> bool {
        true
    }
}

impl Writes {
    async fn commit_then_publish(&self, placement: Placement) -> Result<Placed, PlaceError> {
        let order = store::new_order(&placement);
        let write = OrderWrite::new(Mode::DualWrite.name(), &order, &placement.key);
        let mut conn = store::connection(&self.deps.pool).await?;
        let stored = store::execute(&mut conn, write, &placement).await?;
        if let Stored::Replayed(_) = stored {
            return Ok(stored.placed(order));
        }
        drop(conn);
        service_kit::crash::crash_point("after_commit_before_publish");

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
