//! Publishing orders again, for `order-events audit` and `order-events cdc
//! resync`, which find orders whose event went missing. It is safe to run
//! any number of times: each order goes out under the one event id derived
//! from it.

use async_nats::jetstream::context::Context;

use super::{PublishError, send};
use crate::names::Names;

/// Publishes `OrderPlaced` for `orders` again, each under the event id
/// derived from its order (see [`crate::placed_event_id`]), pipelined: all
/// sends first, then every PubAck. However often it runs, each order is
/// applied once: within the duplicate window the broker drops a repeat, and
/// for good the consumers do (they key by order as well as by event id).
pub async fn republish_orders(
    js: &Context,
    names: &Names,
    orders: impl IntoIterator<Item = crate::OrderPlaced>,
) -> Result<usize, PublishError> {
    let mut pending = Vec::new();
    for order in orders {
        let event = crate::Envelope::new(
            crate::placed_event_id(order.order_id),
            order.placed_at,
            order,
        );
        pending.push(
            send(
                js,
                names.order_placed_subject(),
                event.event_id,
                None,
                event.to_bytes(),
            )
            .await?,
        );
    }
    let republished = pending.len();
    for ack in pending {
        ack.confirmed().await?;
    }
    Ok(republished)
}
