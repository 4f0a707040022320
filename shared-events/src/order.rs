//! Events about orders.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::envelope::Event;

/// An order was stored (or, in self-read mode, accepted) by order-service.
///
/// Version 1. Money is in integer minor units of `currency` (cents for EUR).
// The constraints of its JSON Schema (`docs/schemas/order-placed.v1.json`)
// are the ones rewards-service checks before it credits an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    #[schemars(length(min = 1))]
    pub customer_id: String,
    /// ISO 4217 code.
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The sum of the lines' `quantity` × `unit_price_minor`.
    #[schemars(range(min = 0))]
    pub total_minor: i64,
    #[schemars(length(min = 1))]
    pub lines: Vec<OrderPlacedLine>,
    pub placed_at: DateTime<Utc>,
}

/// One line of an order: `quantity` units of `sku` at `unit_price_minor` each.
// Also the line of order-service's API, whose OpenAPI document carries the
// limits order-service enforces on the lines it takes (so on every line it
// publishes): `sku` is 1 to 64 characters, none of them a control character;
// `quantity` is at most 1,000,000 and `unit_price_minor` at most 10^10. The
// event's JSON Schema leaves those two maxima out: rewards-service checks
// events against it, and an event published before the limits existed
// must still be credited, not dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderLine)]
pub struct OrderPlacedLine {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub sku: String,
    #[schemars(range(min = 1))]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
    /// Minor units of the order's currency.
    #[schemars(range(min = 0))]
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub unit_price_minor: i64,
}

impl Event for OrderPlaced {
    const EVENT_TYPE: &'static str = "OrderPlaced";
    const SCHEMA_VERSION: u32 = 1;
    const AGGREGATE_TYPE: &'static str = "Order";

    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

/// Namespace of the ids derived deterministically (UUID v5) in this system.
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_722d_6576_656e_7473_2d69_6473);

/// The event id of an order's `OrderPlaced` when it is derived from the order
/// (change data capture, repair): the same on every replay, so the broker and
/// the consumers recognise a replay as a duplicate.
pub fn placed_event_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("OrderPlaced:{order_id}").as_bytes())
}
